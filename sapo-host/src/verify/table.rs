//! The verify table as text.

use super::Check;

/// One line per check, aligned, then a summary line.
///
/// ```
/// use sapo_host::verify::{Check, render};
/// let checks = [Check { op: "add".into(), shape: "n=4".into(), dtype: "f32", rel_error: 0.0, tolerance: 1e-5 }];
/// let table = render(&checks);
/// assert!(table.contains("add") && table.contains("pass") && table.ends_with("1 of 1 checks passed\n"));
/// ```
pub fn render(checks: &[Check]) -> String {
    let op_width = checks.iter().map(|c| c.op.chars().count()).max().unwrap_or(2).max(2);
    let shape_width = checks.iter().map(|c| c.shape.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:<op_width$}  {:<shape_width$}  {:<5}  {:>10}  {:>9}  result\n",
        "op", "shape", "dtype", "rel error", "tolerance"
    );
    for check in checks {
        let error = if check.rel_error.is_finite() { format!("{:.2e}", check.rel_error) } else { "NaN/len".into() };
        let result = if check.passed() { "pass" } else { "FAIL" };
        out.push_str(&format!(
            "{:<op_width$}  {:<shape_width$}  {:<5}  {:>10}  {:>9.0e}  {result}\n",
            pad(&check.op, op_width),
            pad(&check.shape, shape_width),
            check.dtype,
            error,
            check.tolerance,
        ));
    }
    let passed = checks.iter().filter(|c| c.passed()).count();
    out.push_str(&format!("{passed} of {} checks passed\n", checks.len()));
    out
}

/// `{:<width$}` counts chars, but shapes hold `ᵀ` and `θ`: pad by chars.
fn pad(text: &str, width: usize) -> String {
    let mut padded = text.to_string();
    padded.extend(std::iter::repeat_n(' ', width.saturating_sub(text.chars().count())));
    padded
}
