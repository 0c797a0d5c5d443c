-- wrk script for the kca benchmark: the request comes from the environment, and `done` prints one
-- JSON line (prefixed with "RESULT ") with the counts and latency percentiles.
--
--   WRK_METHOD     GET (default) or POST
--   WRK_BODY_FILE  file whose content is the request body (JSON)
--   WRK_HEADERS    extra headers, "Name: value" separated by "|"
--
-- The body is fixed: kca and cfssl draw a fresh serial (and key, for key generation) per request.

wrk.method = os.getenv("WRK_METHOD") or "GET"

local body_file = os.getenv("WRK_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

local extra = os.getenv("WRK_HEADERS")
if extra and extra ~= "" then
  for header in string.gmatch(extra, "[^|]+") do
    local name, value = string.match(header, "^%s*([^:]+):%s*(.-)%s*$")
    if name then
      wrk.headers[name] = value
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
