//! How a configuration mistake is told: where it is (file, line, column, the line itself
//! with a caret under the fault), which key it is (`apps[0].max_connections`, found by
//! `serde_path_to_error` rather than guessed from the line), what the value must be in
//! words rather than Rust type names, and the nearest known key for a misspelt one.
//!
//! The same words serve the config file, the `HERALD_*` variables and an app's fields
//! given to `herald apps --set`, so a mistake reads the same wherever it was made.

use serde::de::DeserializeOwned;

use super::error::{invalid, ConfigError};
use crate::redact::{redact_text, REDACTED};

/// What a count must be.
pub(crate) const WHOLE_NUMBER: &str = "a whole number ≥ 0";
/// What a port must be.
pub(crate) const PORT_NUMBER: &str = "a whole number from 0 to 65535";

/// Longest source line shown under an error; a longer one is cut (a minified file).
const MAX_SHOWN_LINE: usize = 160;

/// Parses `text` (the file shown as `path`) into `T`, or says what is wrong and where.
pub(crate) fn parse_toml<T: DeserializeOwned>(path: &str, text: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.into_inner();
        let secret = is_secret(&key);
        let (location, snippet) = match inner.span() {
            Some(span) => excerpt(text, span, secret),
            None => (String::new(), String::new()),
        };
        ConfigError::Parse {
            path: path.to_owned(),
            location,
            snippet,
            message: explain(&key, inner.message(), secret),
        }
    })
}

/// The problem of a value at `key` (a path like `apps[0].port`; `.` or empty at the top) in
/// words, naming the key: see [`describe`].
pub(crate) fn explain(key: &str, message: &str, secret: bool) -> String {
    let (key, problem) = describe(key, message, secret, "a setting");
    if key.is_empty() {
        problem
    } else {
        format!("`{key}` {problem}")
    }
}

/// The key at fault and what is wrong with it: a misspelt key with the nearest known one,
/// a value of the wrong kind with what it must be, else the parser's own message on one
/// line. The key is empty when the parser names none (a syntax error). `top` is what a key
/// of the outermost table is ("a setting", "an app setting").
pub(crate) fn describe(key: &str, message: &str, secret: bool, top: &str) -> (String, String) {
    let message = redact_text(message.trim()).replace('\n', "; ");
    let key = if key == "." { "" } else { key };
    if let Some((name, known)) = unknown_field(&message) {
        // The path stops at the table that refused the key, or names the key itself.
        let at = key
            .strip_suffix(name)
            .map_or(key, |at| at.trim_end_matches('.'));
        let full = if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        };
        let setting = if at.is_empty() {
            top.to_owned()
        } else {
            format!("a setting of `{}`", table_of(at))
        };
        let problem = match nearest(name, &known) {
            Some(near) => format!("is not {setting}; did you mean `{near}`?"),
            None => format!("is not {setting} (docs/configuration.md lists them all)"),
        };
        return (full, problem);
    }
    if let Some((found, expected)) = wrong_kind(&message) {
        if let Some(must) = must_be(expected) {
            let problem = if secret {
                format!("must be {must}")
            } else {
                format!("must be {must}, not {}", found_value(found))
            };
            return (key.to_owned(), problem);
        }
    }
    if key.is_empty() {
        (String::new(), message)
    } else {
        (key.to_owned(), format!("is invalid: {message}"))
    }
}

/// A value of the wrong kind for a `HERALD_*` variable, in the file's words.
pub(crate) fn bad_env(name: &str, must: &str, value: &str) -> ConfigError {
    invalid(name, format!("must be {must}, not '{value}'"))
}

/// Whether `key` holds a secret: its value is never shown, even when it is wrong.
pub(crate) fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last == "secret" || last.ends_with("_token") || last.ends_with("_secret")
}

/// How the docs name the table at `path`: `apps[0]` is an `[[apps]]` entry,
/// `plans.pro` a `[plans.NAME]`.
fn table_of(path: &str) -> String {
    let bare: String = path
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect::<Vec<_>>()
        .join(".");
    match bare.as_str() {
        "apps" => "[[apps]]".to_owned(),
        "apps.webhooks" => "[[apps.webhooks]]".to_owned(),
        _ if bare.starts_with("plans.") => "[plans.NAME]".to_owned(),
        _ => path.to_owned(),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`", or
/// "there are no fields"): the name given and the names known.
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, after) = rest.split_once('`')?;
    // Between backquotes: the odd pieces.
    let known = after.split('`').skip(1).step_by(2).collect();
    Some((name, known))
}

/// The known name nearest to `name`, when it is near enough to be the one meant: at most
/// two edits, or a quarter of the name's length for a long one.
fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let (best, distance) = known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(name, k)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 2.max(name.chars().count() / 4)).then_some(best)
}

/// serde's "invalid type: X, expected Y" or "invalid value: X, expected Y".
fn wrong_kind(message: &str) -> Option<(&str, &str)> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    rest.rsplit_once(", expected ")
}

/// What serde's name of a type means to someone writing the file.
pub(crate) fn must_be(expected: &str) -> Option<&'static str> {
    Some(match expected {
        "usize" | "u64" => WHOLE_NUMBER,
        "u32" => "a whole number from 0 to 4294967295",
        "u16" => PORT_NUMBER,
        "u8" => "a whole number from 0 to 255",
        "a boolean" => "true or false",
        "a string" | "path string" => "a string in quotes",
        "a sequence" => "a list in brackets ([…])",
        "a map" => "a table",
        _ if expected.starts_with("struct ") => "a table",
        _ => return None,
    })
}

/// serde's description of the value found, as it was written: "integer `-1`" is `-1`,
/// "string \"one\"" is `"one"`.
fn found_value(found: &str) -> String {
    if let Some(text) = found.strip_prefix("string ") {
        return text.to_owned();
    }
    if let Some((_, quoted)) = found.split_once('`') {
        return quoted.trim_end_matches('`').to_owned();
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// `, line L, column C` and the line with a caret under `span`, for an error in `text`.
/// A secret's line shows its key only.
fn excerpt(text: &str, span: std::ops::Range<usize>, secret: bool) -> (String, String) {
    let start = floor_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim_end_matches('\r');
    let number = text[..start].matches('\n').count() + 1;
    let before = &text[line_start..start];
    let column = before.chars().count() + 1;
    let location = format!(", line {number}, column {column}");
    let shown = if secret {
        match line.split_once('=') {
            Some((key, _)) => format!("{key}= {REDACTED}"),
            None => REDACTED.to_owned(),
        }
    } else {
        redact_text(line)
    };
    // A caret under a shown value only: a secret's or a redacted line's columns moved.
    let caret = !secret && shown == line && column <= MAX_SHOWN_LINE;
    let shown: String = shown.chars().take(MAX_SHOWN_LINE).collect();
    let gutter = " ".repeat(number.to_string().len());
    let mut snippet = format!(" {number} | {shown}\n");
    if caret {
        let pad: String = before
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        // Never before `start`: a fault at a CRLF line's end sits past the line shown.
        let line_end = (line_start + line.len()).max(start);
        let end = floor_boundary(text, span.end.clamp(start, line_end));
        let width = text[start..end]
            .chars()
            .count()
            .clamp(1, MAX_SHOWN_LINE + 1 - column);
        snippet.push_str(&format!(" {gutter} | {pad}{}\n", "^".repeat(width)));
    }
    (location, snippet)
}

/// The nearest char boundary at or before `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_key_is_suggested_only_when_near() {
        let known = ["port", "publishes_per_second", "host"];
        assert_eq!(nearest("prot", &known), Some("port"));
        assert_eq!(
            nearest("publishes_per_secnd", &known),
            Some("publishes_per_second")
        );
        assert_eq!(nearest("colour", &known), None);
    }

    #[test]
    fn the_caret_stays_under_the_shown_part_of_a_long_line() {
        let text = format!("x = \"{}\"\nport = 1\n", "a".repeat(400));
        let (location, snippet) = excerpt(&text, 4..406, false);
        assert_eq!(location, ", line 1, column 5");
        let lines: Vec<&str> = snippet.lines().collect();
        assert_eq!(lines[0].chars().count(), " 1 | ".len() + MAX_SHOWN_LINE);
        assert_eq!(
            lines[1],
            format!("   |     {}", "^".repeat(MAX_SHOWN_LINE - 4))
        );
        // A span past the end (an error at the end of the file) shows the last line.
        let (location, _) = excerpt("port = [", 99..100, false);
        assert_eq!(location, ", line 1, column 9");
        // A fault at a CRLF line's end.
        let (location, snippet) = excerpt("host = \r\nport = 1", 8..9, false);
        assert_eq!(location, ", line 1, column 9");
        assert!(snippet.ends_with("|         ^\n"), "{snippet:?}");
    }

    proptest::proptest! {
        /// A span anywhere in (or past) any text gives a line, without a panic.
        #[test]
        fn any_text_and_span_is_told_without_panicking(
            text in "[a-z_\\[\\]=\"' .\r\n\t0-9é-]{0,80}",
            start in 0usize..100,
            len in 0usize..20,
        ) {
            let (location, snippet) = excerpt(&text, start..start + len, false);
            proptest::prop_assert!(location.starts_with(", line "));
            proptest::prop_assert!(snippet.contains(" | "));
        }
    }

    #[test]
    fn serdes_words_become_the_files() {
        assert_eq!(
            explain(
                "apps[0].max_connections",
                "invalid value: integer `-1`, expected usize",
                false
            ),
            "`apps[0].max_connections` must be a whole number ≥ 0, not -1"
        );
        assert_eq!(
            explain("x", "invalid type: string \"one\", expected u16", false),
            "`x` must be a whole number from 0 to 65535, not \"one\""
        );
        assert_eq!(
            explain(
                "admin_token",
                "invalid type: integer `12345`, expected a string",
                true
            ),
            "`admin_token` must be a string in quotes"
        );
    }
}
