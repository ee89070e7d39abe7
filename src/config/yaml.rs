//! The YAML document as written: a tree built from granit-parser's events
//! (the parser serde-saphyr runs on) that keeps every scalar's text exactly
//! as it appears and whether it was plain or quoted, with line numbers.
//!
//! Nothing is resolved to a type here: a plain `on`, `n`, `yes` or
//! `0123456` stays that text. The decoder (`decode.rs`) decides per key what
//! the text means, so a field that is text takes it unchanged and a number
//! is parsed only where a number belongs.
//!
//! Refused with a problem naming the key: anchors and aliases (`&a`, `*a`),
//! tags other than `!!str`/`!!seq`/`!!map`, keys that are not scalars, a key
//! given twice in one mapping, and a second document.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};

use super::Problem;

/// One node of the document.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// 1-based line where the node starts (for messages).
    pub line: usize,
    /// What the node holds.
    pub kind: Kind,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// A scalar's text after YAML escape processing, before `${NAME}`
    /// interpolation.
    Scalar {
        /// The text.
        text: String,
        /// Written without quotes (or block indicator) and without `!!str`:
        /// only such a scalar can mean null, or a number or boolean inside
        /// a `when.json` value.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in document order; keys are unique.
    Map(Vec<Entry>),
    /// A node refused while building the tree (an alias or an unsupported
    /// tag). The problem is already reported; decoding skips it silently.
    Refused,
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The key's text as written (never interpolated).
    pub key: String,
    /// Line of the key.
    pub line: usize,
    /// The value.
    pub value: Node,
}

impl Node {
    /// A plain scalar that YAML reads as null: empty, `~` or `null`. A key
    /// holding one counts as not given. Decided on the text as written, so
    /// an interpolated value can never turn a key off.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What this node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Refused => "a refused node",
        }
    }
}

/// A parsed document: its root (absent for an empty file) and the
/// problems met while building it.
pub(super) struct Document {
    /// The root node; `None` when the file holds no document or only `~`.
    pub root: Option<Node>,
    /// Anchors, aliases, tags, complex or duplicate keys, extra documents.
    pub problems: Vec<Problem>,
    /// Keys whose value was refused here (validation skips them).
    pub refused: Vec<String>,
}

/// Parses YAML text. A syntax error is returned as a message with its
/// line and column and the parser's description; it never quotes the text.
pub(super) fn parse(text: &str) -> Result<Document, String> {
    let options = granit_parser::options! {
        emit_comments: false,
        flow_nesting_limit: 64,
        block_nesting_limit: 64,
    };
    let mut builder = Builder {
        events: Parser::new_from_str_with_options(text, options),
        problems: Vec::new(),
        refused: Vec::new(),
    };
    builder.document().map_err(|e| syntax_message(&e))
}

fn syntax_message(e: &ScanError) -> String {
    let at = e.marker();
    format!("line {}, column {}: {}", at.line(), at.col() + 1, e.info())
}

struct Builder<'a> {
    events: Parser<'a, granit_parser::StrInput<'a>>,
    problems: Vec<Problem>,
    refused: Vec<String>,
}

const NO_ANCHORS: &str = "YAML anchors (`&name`) and aliases (`*name`) are not supported: \
     write the value out, or put shared delivery settings under `defaults:`";

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ScanError> {
        loop {
            match self.events.next() {
                Some(Ok((Event::Comment(..), _))) => continue,
                Some(Ok(pair)) => return Ok(pair),
                Some(Err(e)) => return Err(e),
                // The parser always ends with StreamEnd; treat a bare end alike.
                None => return Ok((Event::StreamEnd, Span::default())),
            }
        }
    }

    fn document(&mut self) -> Result<Document, ScanError> {
        let mut root = None;
        let mut documents = 0;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart(..) => {
                    documents += 1;
                    let (first, first_span) = self.next()?;
                    let node = self.node(first, first_span, "")?;
                    if documents == 1 {
                        root = (!node.is_null()).then_some(node);
                    } else if documents == 2 {
                        self.problems.push(Problem::new(
                            "",
                            format!(
                                "the file holds more than one YAML document (the second starts at line {}); a config is one document",
                                span.start.line()
                            ),
                        ));
                    }
                }
                Event::StreamEnd => break,
                _ => {}
            }
        }
        Ok(Document {
            root,
            problems: std::mem::take(&mut self.problems),
            refused: std::mem::take(&mut self.refused),
        })
    }

    /// Builds the node that starts with `event`, consuming its whole subtree.
    fn node(&mut self, event: Event<'a>, span: Span, path: &str) -> Result<Node, ScanError> {
        let line = span.start.line();
        let kind = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.anchor(anchor, path);
                let mut plain = style == ScalarStyle::Plain;
                match tag.as_deref() {
                    None => Kind::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                    Some(t) if t.is_yaml_core_schema_tag("str") => {
                        plain = false;
                        Kind::Scalar {
                            text: text.into_owned(),
                            plain,
                        }
                    }
                    Some(t) => self.refuse_tag(t, path),
                }
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.anchor(anchor, path);
                let refused = self.check_collection_tag(tag.as_deref(), "seq", path);
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let at = format!("{path}[{}]", items.len());
                    items.push(self.node(event, span, &at)?);
                }
                if refused {
                    Kind::Refused
                } else {
                    Kind::Seq(items)
                }
            }
            Event::MappingStart(_, anchor, tag) => {
                self.anchor(anchor, path);
                let refused = self.check_collection_tag(tag.as_deref(), "map", path);
                let entries = self.mapping(path)?;
                if refused {
                    Kind::Refused
                } else {
                    Kind::Map(entries)
                }
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                self.refuse(path, NO_ANCHORS);
                Kind::Refused
            }
            // Not a node event where a node belongs: the parser reports
            // malformed streams itself, so this is unreachable in practice.
            _ => {
                self.refuse(path, "is not a YAML value");
                Kind::Refused
            }
        };
        Ok(Node { line, kind })
    }

    fn mapping(&mut self, path: &str) -> Result<Vec<Entry>, ScanError> {
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            let (event, span) = self.next()?;
            let line = span.start.line();
            let key = match event {
                Event::MappingEnd => break,
                Event::Scalar(text, _, anchor, tag) => {
                    if anchor != 0 || tag.is_some() {
                        self.problems.push(Problem::new(
                            path,
                            format!(
                                "the key at line {line} carries an anchor or a tag; keys are plain text"
                            ),
                        ));
                    }
                    Some(text.into_owned())
                }
                other => {
                    // A list or mapping used as a key: build and drop it.
                    self.node(other, span, path)?;
                    self.problems.push(Problem::new(
                        path,
                        format!(
                            "the key at line {line} is not plain text (a list, mapping or alias)"
                        ),
                    ));
                    None
                }
            };
            let at = match &key {
                Some(k) if path.is_empty() => k.clone(),
                Some(k) => format!("{path}.{k}"),
                None => path.to_string(),
            };
            let (event, span) = self.next()?;
            let value = self.node(event, span, &at)?;
            let Some(key) = key else { continue };
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                self.problems.push(Problem::new(
                    at,
                    format!(
                        "is given twice (lines {} and {line}); YAML keys must be unique",
                        first.line
                    ),
                ));
                continue;
            }
            entries.push(Entry { key, line, value });
        }
        Ok(entries)
    }

    fn anchor(&mut self, anchor: usize, path: &str) {
        if anchor != 0 {
            self.problems.push(Problem::new(path, NO_ANCHORS));
        }
    }

    fn refuse(&mut self, path: &str, message: &str) {
        self.problems.push(Problem::new(path, message));
        self.refused.push(path.to_string());
    }

    fn refuse_tag(&mut self, _tag: &Tag, path: &str) -> Kind {
        self.refuse(
            path,
            "carries a YAML tag; only `!!str` is supported (it makes the value text)",
        );
        Kind::Refused
    }

    /// `!!seq` on a sequence and `!!map` on a mapping say nothing new and
    /// are accepted; any other tag is refused. Returns whether it was refused.
    fn check_collection_tag(&mut self, tag: Option<&Tag>, core: &str, path: &str) -> bool {
        match tag {
            None => false,
            Some(t) if t.is_yaml_core_schema_tag(core) => false,
            Some(t) => {
                self.refuse_tag(t, path);
                true
            }
        }
    }
}

/// The line of every key path in the tree (`routes[0].subscribers[1].url`),
/// so a problem found later, by validation, can say where it is.
pub(super) fn line_index(root: &Node) -> HashMap<String, usize> {
    fn walk(node: &Node, path: &mut String, out: &mut HashMap<String, usize>) {
        match &node.kind {
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.insert(path.clone(), item.line);
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            Kind::Map(entries) => {
                for entry in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&entry.key);
                    out.insert(path.clone(), entry.line);
                    walk(&entry.value, path, out);
                    path.truncate(len);
                }
            }
            Kind::Scalar { .. } | Kind::Refused => {}
        }
    }
    let mut out = HashMap::new();
    walk(root, &mut String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let doc = parse(text).unwrap();
        assert!(doc.problems.is_empty(), "{:?}", doc.problems);
        doc.root.unwrap()
    }

    fn scalar(node: &Node) -> (&str, bool) {
        match &node.kind {
            Kind::Scalar { text, plain } => (text, *plain),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    fn entries(node: &Node) -> &[Entry] {
        match &node.kind {
            Kind::Map(e) => e,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn scalars_keep_their_text_and_style() {
        let r = root("a: on\nb: '0123'\nc: 0123\nd: \"yes\"\ne: !!str 12\nf: |\n  x\n");
        let e = entries(&r);
        assert_eq!(scalar(&e[0].value), ("on", true));
        assert_eq!(scalar(&e[1].value), ("0123", false));
        assert_eq!(scalar(&e[2].value), ("0123", true));
        assert_eq!(scalar(&e[3].value), ("yes", false));
        assert_eq!(scalar(&e[4].value), ("12", false));
        assert_eq!(scalar(&e[5].value), ("x\n", false));
        assert_eq!(e[2].line, 3);
    }

    #[test]
    fn nulls_are_plain_only() {
        let r = root("a:\nb: ~\nc: null\nd: 'null'\ne: nul\n");
        let nulls: Vec<bool> = entries(&r).iter().map(|e| e.value.is_null()).collect();
        assert_eq!(nulls, [true, true, true, false, false]);
    }

    #[test]
    fn anchors_and_aliases_are_refused_by_key() {
        let doc = parse("a: &x 1\nb: *x\n").unwrap();
        let keys: Vec<&str> = doc.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(doc.problems[0].message.contains("anchors"));
        assert_eq!(doc.refused, ["b"]);
    }

    #[test]
    fn other_tags_are_refused() {
        let doc = parse("a: !!int 1\nb: !custom x\nc: !!map {}\n").unwrap();
        let keys: Vec<&str> = doc.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let doc = parse("x:\n  k: 1\n  k: 2\n").unwrap();
        assert_eq!(doc.problems.len(), 1);
        assert_eq!(doc.problems[0].key, "x.k");
        assert!(doc.problems[0].message.contains("lines 2 and 3"));
    }

    #[test]
    fn complex_keys_and_second_documents_are_refused() {
        let doc = parse("? [a, b]\n: 1\n").unwrap();
        assert!(doc.problems[0].message.contains("not plain text"));
        let doc = parse("a: 1\n---\nb: 2\n").unwrap();
        assert!(doc.problems[0]
            .message
            .contains("more than one YAML document"));
    }

    #[test]
    fn empty_documents_have_no_root() {
        assert!(parse("").unwrap().root.is_none());
        assert!(parse("# only a comment\n").unwrap().root.is_none());
        assert!(parse("~\n").unwrap().root.is_none());
    }

    #[test]
    fn syntax_errors_give_a_position_not_the_text() {
        let e = parse("a: [secret-value\n").err().unwrap();
        assert!(e.starts_with("line "), "{e}");
        assert!(!e.contains("secret-value"), "{e}");
    }

    #[test]
    fn line_index_covers_every_key() {
        let r = root("a:\n  - x: 1\n    y: 2\n");
        let lines = line_index(&r);
        assert_eq!(lines["a"], 1);
        assert_eq!(lines["a[0].y"], 3);
    }
}
