//! Diagnostics without backtraces: tf-provider's own constructors append one whenever
//! RUST_BACKTRACE is set, which buries the server's message under a page of stack frames.

use tf_provider::{AttributePath, Diagnostic, Diagnostics};

pub fn error(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    error_at(diags, summary, detail, AttributePath::root());
}

pub fn error_at(
    diags: &mut Diagnostics,
    summary: impl Into<String>,
    detail: impl Into<String>,
    attribute: AttributePath,
) {
    diags.add_error(Diagnostic { summary: summary.into().into(), detail: detail.into().into(), attribute });
}

pub fn warning(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    diags.add_warning(Diagnostic {
        summary: summary.into().into(),
        detail: detail.into().into(),
        attribute: AttributePath::root(),
    });
}
