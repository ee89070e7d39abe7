//! `${NAME}` environment interpolation over the parsed YAML tree.
//!
//! Interpolation runs on the document tree (not on the raw text) so that a
//! secret containing quotes or colons can never change the YAML structure,
//! and so that every missing variable is reported with the key it sits
//! under. `$${` escapes a literal `${`.

use serde_json::Value;

use super::Problem;

/// Replaces `${NAME}` in every string of `value`, looking names up with
/// `lookup`. Each unset variable becomes a [`Problem`] naming its key; the
/// value is never echoed (it may be a secret).
pub fn interpolate(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => *text = expanded,
            Err(name) => problems.push(Problem::new(
                path.clone(),
                format!("environment variable `{name}` is not set"),
            )),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, path, lookup, problems);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                interpolate(item, path, lookup, problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Expands one string; on failure returns the first missing variable name.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("{} (unclosed `${{`)", truncate(tail)))?;
            let name = &tail[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("{name} (not a valid variable name)"));
            }
            let found = lookup(name).ok_or_else(|| name.to_string())?;
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

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
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
    }

    #[test]
    fn missing_variable_names_key_not_value() {
        let mut v: Value = serde_json::json!({"admin": {"token": "${NOPE}"}, "x": ["${TOKEN}"]});
        let mut problems = Vec::new();
        interpolate(&mut v, &mut String::new(), &env, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "admin.token");
        assert!(problems[0].message.contains("NOPE"));
        assert_eq!(v["x"][0], "s3cr\"et: x");
    }
}
