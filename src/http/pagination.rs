//! Cursor pagination: `limit` and an opaque `cursor`, answered as `{"items", "next_cursor"}`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            Some(_) => Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}"))),
        }
    }

    /// The decoded cursor text, if any.
    pub fn cursor(&self) -> Result<Option<String>, ApiError> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid cursor"))
            })
            .transpose()
    }

    /// The decoded cursor as a sequence number.
    pub fn cursor_number(&self) -> Result<Option<i64>, ApiError> {
        self.cursor()?
            .map(|text| text.parse::<i64>().map_err(|_| ApiError::bad_request("invalid cursor")))
            .transpose()
    }
}

/// Encode the position after the last item of a full page.
pub fn next_cursor(page_len: usize, limit: u32, last: Option<String>) -> Option<String> {
    if page_len < limit as usize {
        return None;
    }
    last.map(|text| URL_SAFE_NO_PAD.encode(text))
}
