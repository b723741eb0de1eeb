//! The parts of Python that show through a Jinja template rendered by
//! transformers: how values print (`str()`: `None`, `True`, `1e-05`,
//! `['a', 1]`), transformers' `tojson` (Python's `json.dumps`, not Jinja's
//! HTML-safe one), and `strftime_now`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Python's `repr(float)` (equal to `str(float)`): the shortest digits that
/// round-trip, fixed notation for decimal exponents in [-4, 16), else
/// scientific with a signed exponent of at least two digits.
pub(crate) fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` prints the shortest round-trip digits, e.g. `-1.2345e3`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |rest| ("-", rest));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let n_digits = digits.len() as i32;
        let body = if exponent < 0 {
            format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize))
        } else if exponent + 1 >= n_digits {
            format!("{digits}{}.0", "0".repeat((exponent + 1 - n_digits) as usize))
        } else {
            let (whole, fraction) = digits.split_at((exponent + 1) as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{first}{fraction}e{exponent_sign}{:02}", exponent.abs())
    }
}

/// Whether Python's `str.isprintable()` holds for `c`, for the code points
/// that matter in practice: controls, separators other than the space, and
/// the common format and private-use characters. (Python also escapes
/// unassigned code points, which needs the Unicode database; those print raw.)
fn is_printable(c: char) -> bool {
    let code = u32::from(c);
    let non_printable = matches!(code,
        0x00..=0x1F | 0x7F..=0xA0 | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x1680 | 0x180E
        | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064 | 0x2066..=0x206F | 0x3000 | 0xE000..=0xF8FF
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        | 0xF0000..=0x10FFFF);
    !non_printable
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`.
fn string_repr(text: &str, out: &mut String) {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c == ' ' || is_printable(c) => out.push(c),
            c if u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push(quote);
}

/// Python's `repr()` of a template value, used inside printed containers.
fn value_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::String => string_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => container_str(value, out),
        _ => scalar_str(value, out),
    }
}

/// Python's `str()` of a scalar: `None`, `True`, `3`, `2.5e-07`.
fn scalar_str(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if !value.is_integer() => {
            out.push_str(&float_repr(f64::try_from(value.clone()).unwrap_or(f64::NAN)));
        }
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `str()` of a list, tuple or dict: `['a', 1]`, `('a',)`, `{'k': None}`.
fn container_str(value: &Value, out: &mut String) {
    let Ok(items) = value.try_iter() else {
        let _ = write!(out, "{value}");
        return;
    };
    if value.kind() == ValueKind::Map {
        out.push('{');
        for (index, key) in items.enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            value_repr(&key, out);
            out.push_str(": ");
            value_repr(&value.get_item(&key).unwrap_or_default(), out);
        }
        out.push('}');
        return;
    }
    let tuple = value.is_tuple();
    out.push(if tuple { '(' } else { '[' });
    let mut count = 0;
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        value_repr(&item, out);
        count += 1;
    }
    if tuple && count == 1 {
        out.push(',');
    }
    out.push(if tuple { ')' } else { ']' });
}

/// What `{{ value }}` prints under Python's Jinja: `str(value)`.
pub(crate) fn python_str(value: &Value) -> String {
    let mut out = String::new();
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => container_str(value, &mut out),
        _ => scalar_str(value, &mut out),
    }
    out
}

/// Options of transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl JsonOptions {
    /// Reads positional and keyword arguments in the Python signature's order.
    fn from_args(positional: &[Value], kwargs: &Kwargs) -> Result<Self, Error> {
        const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
        if positional.len() > NAMES.len() {
            return Err(Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments after the value"));
        }
        let mut values: [Value; 4] = Default::default();
        for (slot, value) in values.iter_mut().zip(positional) {
            *slot = value.clone();
        }
        for (slot, name) in values.iter_mut().zip(NAMES) {
            if kwargs.has(name) {
                *slot = kwargs.get::<Value>(name)?;
            }
        }
        kwargs.assert_all_used()?;
        let [ensure_ascii, indent, separators, sort_keys] = values;
        let indent = match indent.kind() {
            ValueKind::Undefined | ValueKind::None => None,
            ValueKind::String => Some(indent.as_str().unwrap_or_default().to_string()),
            ValueKind::Number => Some(" ".repeat(indent.as_i64().unwrap_or(0).max(0) as usize)),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson indent must be a number or a string")),
        };
        let (item_separator, key_separator) = match separators.kind() {
            ValueKind::Undefined | ValueKind::None => {
                (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string())
            }
            _ => {
                let parts: Vec<Value> = separators.try_iter()?.collect();
                match parts.as_slice() {
                    [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                        (item.as_str().unwrap_or_default().to_string(), key.as_str().unwrap_or_default().to_string())
                    }
                    _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson separators must be two strings")),
                }
            }
        };
        Ok(Self {
            ensure_ascii: ensure_ascii.is_true(),
            indent,
            item_separator,
            key_separator,
            sort_keys: sort_keys.is_true(),
        })
    }
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, …)`.
/// Unlike Jinja's own it does not escape `<`, `>`, `&` or `'`.
pub(crate) fn tojson(value: &Value, positional: &[Value], kwargs: &Kwargs) -> Result<Value, Error> {
    let options = JsonOptions::from_args(positional, kwargs)?;
    let mut out = String::new();
    write_json(value, &options, 0, &mut out)?;
    Ok(Value::from(out))
}

fn json_string(text: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && u32::from(c) > 0x7E) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    let float = f64::try_from(value.clone()).unwrap_or(f64::NAN);
    out.push_str(&match float {
        float if float.is_nan() => "NaN".to_string(),
        float if float == f64::INFINITY => "Infinity".to_string(),
        float if float == f64::NEG_INFINITY => "-Infinity".to_string(),
        float => float_repr(float),
    });
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers,
/// booleans and `None` converted, anything else an error.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => {
            let mut out = String::new();
            json_number(key, &mut out);
            Ok(out)
        }
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {key}"),
        )),
    }
}

fn write_newline(options: &JsonOptions, level: usize, out: &mut String) {
    if let Some(indent) = &options.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_json(value: &Value, options: &JsonOptions, level: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => json_number(value, out),
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), options.ensure_ascii, out),
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                entries.push((json_key(&key)?, value.get_item(&key)?));
            }
            if options.sort_keys {
                entries.sort_by(|left, right| left.0.cmp(&right.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(&options.item_separator);
                }
                write_newline(options, level + 1, out);
                json_string(key, options.ensure_ascii, out);
                out.push_str(&options.key_separator);
                write_json(item, options, level + 1, out)?;
            }
            write_newline(options, level, out);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(&options.item_separator);
                }
                write_newline(options, level + 1, out);
                write_json(item, options, level + 1, out)?;
            }
            write_newline(options, level, out);
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of kind {} is not JSON serializable", value.kind()),
            ));
        }
    }
    Ok(())
}

/// `strftime_now(format)`: the current time formatted like Python's
/// `datetime.now().strftime(format)`, in UTC (transformers uses the local
/// time zone; they agree where the machine runs in UTC, as servers do).
/// Supports the directives chat templates use: `%Y %y %m %d %e %H %I %M %S %p
/// %j %a %A %b %B %F %T %Z %z %%` and glibc's unpadded `%-d`-style forms.
pub(crate) fn strftime_now(format: &str) -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
    strftime_utc(format, seconds)
}

/// `format` applied to the UTC time `seconds` after the Unix epoch.
pub(crate) fn strftime_utc(format: &str, seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year_march = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year_march + 2) / 153;
    let day = day_of_year_march - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let number = |value: i64, width: usize| {
            if unpadded { value.to_string() } else { format!("{value:0width$}") }
        };
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&number(year % 100, 2)),
            Some('m') => out.push_str(&number(month, 2)),
            Some('d') => out.push_str(&number(day, 2)),
            Some('e') => out.push_str(&if unpadded { day.to_string() } else { format!("{day:2}") }),
            Some('H') => out.push_str(&number(hour as i64, 2)),
            Some('I') => out.push_str(&number(hour12 as i64, 2)),
            Some('M') => out.push_str(&number(minute as i64, 2)),
            Some('S') => out.push_str(&number(second as i64, 2)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&number(day_of_year, 3)),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (2.5e-07, "2.5e-07"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (-3.5, "-3.5"),
            (100.0, "100.0"),
            (1.5e300, "1.5e+300"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn strftime_formats_a_known_instant() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60 of a leap year.
        let seconds = 1_709_211_909;
        assert_eq!(strftime_utc("%Y-%m-%d %H:%M:%S", seconds), "2024-02-29 13:05:09");
        assert_eq!(
            strftime_utc("%d %b %Y, %A %j %I%p %-d/%-m %y %%", seconds),
            "29 Feb 2024, Thursday 060 01PM 29/2 24 %"
        );
        assert_eq!(strftime_utc("%F %T %Z %q", 0), "1970-01-01 00:00:00 UTC %q");
    }

    #[test]
    fn string_repr_picks_quotes_and_escapes_like_python() {
        let repr = |text: &str| {
            let mut out = String::new();
            string_repr(text, &mut out);
            out
        };
        assert_eq!(repr("it's"), "\"it's\"");
        assert_eq!(repr("both ' \""), "'both \\' \"'");
        assert_eq!(repr("tab\tnl\n\u{1}\u{a0}é😀"), "'tab\\tnl\\n\\x01\\xa0é😀'");
    }
}
