// DOM and formatting helpers. Text from the server only ever goes through textContent, never
// innerHTML, so a hostile label or group name cannot become markup.

/** Create an element: h('a', {href: '#/x', class: 'y'}, 'text', otherNode). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : value);
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

/** Clone a <template> and index its `data-ref` elements. */
export function view(templateId) {
  const fragment = document.getElementById(templateId).content.cloneNode(true);
  const refs = {};
  for (const el of fragment.querySelectorAll('[data-ref]')) refs[el.dataset.ref] = el;
  return { fragment, refs };
}

/** Announce a short result in the page's polite live region. */
let toastTimer = 0;
export function announce(text) {
  const toast = document.getElementById('toast');
  toast.textContent = '';
  clearTimeout(toastTimer);
  // A fresh text node after a tick makes screen readers announce a repeated message too.
  setTimeout(() => { toast.textContent = text; }, 30);
  toastTimer = setTimeout(() => { toast.textContent = ''; }, 10000);
}

// ---- Time --------------------------------------------------------------------------------------

const UNITS = { d: 86400, h: 3600, min: 60, m: 60, s: 1 };

/** "8h", "90m", "1h30m", "2d" or plain seconds → seconds; null when empty; throws when malformed. */
export function parseDuration(text) {
  const t = text.replace(/\s+/g, '').toLowerCase();
  if (!t) return null;
  if (/^\d+$/.test(t)) return Number(t);
  if (!/^(\d+(d|h|min|m|s))+$/.test(t)) throw new Error('Use a duration like 90m, 8h or 7d.');
  let total = 0;
  for (const [, n, unit] of t.matchAll(/(\d+)(d|h|min|m|s)/g)) total += Number(n) * UNITS[unit];
  return total;
}

/** Seconds → "8 h", "90 min", "7 d". */
export function formatDuration(seconds) {
  if (seconds >= 2 * 86400 && seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** An RFC 3339 time relative to now: "in 52 min", "3 h ago". */
export function relative(iso, now = Date.now()) {
  const delta = Math.round((Date.parse(iso) - now) / 1000);
  const a = Math.abs(delta);
  const [n, unit] =
    a < 60 ? [a, 's'] : a < 5400 ? [Math.round(a / 60), 'min'] : a < 2 * 86400 ? [Math.round(a / 3600), 'h'] : [Math.round(a / 86400), 'd'];
  return delta >= 0 ? `in ${n} ${unit}` : `${n} ${unit} ago`;
}

/** A <time> showing the relative time, with the exact one on hover and for assistive technology. */
export function timeEl(iso) {
  const exact = new Date(iso).toLocaleString();
  return h('time', { datetime: iso, title: exact, 'aria-label': `${relative(iso)} (${exact})` }, relative(iso));
}

// ---- Forms ----------------------------------------------------------------------------------------

/** Clear every error a form shows. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error, .form-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid');
}

/**
 * Show an error next to the field it concerns. `field` is the problem's `field` ("user",
 * "groups[1]", "policy.max_ttl_seconds"); an indexed field falls back to its list, and a field the
 * form does not show to the form-wide message.
 */
export function showError(form, field, message) {
  const names = field ? [field, field.replace(/\[\d+\]$/, '')] : [];
  const box = names.map((n) => form.querySelector(`.field[data-field="${CSS.escape(n)}"]`)).find(Boolean);
  if (!box) {
    form.querySelector('.form-error').textContent = message;
    return;
  }
  box.querySelector('.field-error').textContent = message;
  const control = box.querySelector('input:not([type=radio]), select, textarea');
  control?.setAttribute('aria-invalid', 'true');
  // "groups[1]": mark the chip at fault as well.
  const index = field.match(/\[(\d+)\]$/);
  if (index) box.querySelectorAll('.chip')[Number(index[1])]?.classList.add('invalid');
  control?.focus();
}

// ---- Chips ----------------------------------------------------------------------------------------

/**
 * A chip input: Enter (or a comma) adds the typed text as a chip, × or Backspace in the empty input
 * removes one. Answers a getter of the current values.
 */
export function chipInput(list, input) {
  const values = [];
  const render = () => {
    list.replaceChildren(
      ...values.map((value, i) =>
        h('li', { class: 'chip' }, h('span', {}, value),
          h('button', { type: 'button', 'aria-label': `Remove group ${value}`, onclick: () => { values.splice(i, 1); render(); input.focus(); } }, '×'))),
    );
  };
  const commit = () => {
    for (const part of input.value.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!values.includes(part)) values.push(part);
    }
    input.value = '';
    render();
  };
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ',') {
      // Enter would submit the form: here it only adds the chip.
      event.preventDefault();
      commit();
    } else if (event.key === 'Backspace' && !input.value && values.length) {
      values.pop();
      render();
    }
  });
  // What is typed but not yet committed counts too, so nothing is silently dropped on submit.
  return () => { commit(); return [...values]; };
}
