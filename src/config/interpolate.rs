//! `${NAME}` environment interpolation in a scalar's text.
//!
//! It runs on each scalar of the parsed document (never on the raw file),
//! so a value containing quotes, colons or newlines can never change the
//! YAML structure, and a missing variable is reported under the key it sits
//! in. `$${` writes a literal `${`; a `$` not followed by `{` is kept.

/// Expands `${NAME}` in `text` with `lookup`. On failure says why without
/// quoting the text (it may hold part of a secret): only a variable's name,
/// which the file chose, is named.
pub(super) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                "has a `${` without a closing `}` (write `$${` for a literal `${`)".to_string()
            })?;
            let name = &tail[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(
                    "has a `${...}` that is not a variable name (letters, digits, `_`); write `$${` for a literal `${`"
                        .into(),
                );
            }
            let found =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&found);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr\"et: x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_escapes() {
        assert_eq!(expand("a${TOKEN}b", &env).unwrap(), "as3cr\"et: xb");
        assert_eq!(expand("$${TOKEN}", &env).unwrap(), "${TOKEN}");
        assert_eq!(expand("cost $5", &env).unwrap(), "cost $5");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(
            expand("${TOKEN}${TOKEN}", &env).unwrap(),
            "s3cr\"et: xs3cr\"et: x"
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let e = expand("x${NOPE}", &env).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
    }

    #[test]
    fn malformed_references_do_not_quote_the_text() {
        let e = expand("abc${secret-part", &env).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let e = expand("${secret part}", &env).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
