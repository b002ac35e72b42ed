//! A small YAML document tree that remembers where every node came from.
//!
//! The loader needs the line and column of every key and value to explain mistakes, and it
//! must reject what serde-style loaders silently accept (duplicate keys, tags, several
//! documents). So the policy is parsed into this tree from the saphyr event stream, and the
//! schema walk in [`crate::load`] reads the tree.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Aliases can make a small file expand into a huge tree ("billion laughs"); no real policy
/// comes near this many nodes.
const MAX_NODES: usize = 100_000;

/// Nesting deeper than this is not a policy; the bound keeps recursion shallow.
const MAX_DEPTH: usize = 64;

/// A position in the source: 1-based line and 1-based column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1 (in characters).
    pub column: usize,
}

impl Pos {
    fn from_span(span: Span) -> Self {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What the node holds.
    pub value: Value,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        /// The scalar's text after YAML unescaping.
        text: String,
        /// Whether it was written without quotes (and so may be a number, bool or null).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order. Keys are unique scalars (checked while building).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the node's type for error messages ("a list", "a string", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar { text, plain } => match (plain, plain_scalar_kind(text)) {
                (false, _) => "a string",
                (true, PlainKind::Null) => "nothing (null)",
                (true, PlainKind::Bool) => "a boolean",
                (true, PlainKind::Int) => "a number",
                (true, PlainKind::Float) => "a number",
                (true, PlainKind::Str) => "a string",
            },
        }
    }
}

/// How the YAML 1.2 core schema reads a plain (unquoted) scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainKind {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false` in their core-schema spellings.
    Bool,
    /// A decimal, `0o` octal or `0x` hex integer.
    Int,
    /// A float, `.inf` or `.nan`.
    Float,
    /// Anything else.
    Str,
}

/// Classify a plain scalar by the YAML 1.2 core schema.
pub fn plain_scalar_kind(text: &str) -> PlainKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return PlainKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return PlainKind::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return PlainKind::Float,
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let is_int =
        |digits: &str, radix: u32| !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if is_int(unsigned, 10)
        || text.strip_prefix("0o").is_some_and(|d| is_int(d, 8))
        || text.strip_prefix("0x").is_some_and(|d| is_int(d, 16))
    {
        return PlainKind::Int;
    }
    let looks_float = unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && unsigned.parse::<f64>().is_ok();
    if looks_float {
        PlainKind::Float
    } else {
        PlainKind::Str
    }
}

/// Why the text is not a YAML document the loader accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// For duplicate keys: where the key first appeared.
    pub first: Option<Pos>,
}

/// Parse `text` into a tree. An empty document yields `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        last_pos: Pos::default(),
    };
    builder.document()
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    last_pos: Pos,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Pos), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => {
                let pos = Pos::from_span(span);
                self.last_pos = pos;
                Ok((event, pos))
            }
            Some(Err(e)) => Err(SyntaxError {
                pos: Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: format!("YAML syntax error: {}", e.info()),
                first: None,
            }),
            None => Err(self.error(self.last_pos, "unexpected end of YAML input")),
        }
    }

    fn error(&self, pos: Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos,
            message: message.into(),
            first: None,
        }
    }

    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        let mut root = None;
        loop {
            let (event, pos) = self.next()?;
            match event {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) if root.is_some() => {
                    return Err(self.error(
                        pos,
                        "a policy file holds one YAML document; remove the second `---` document",
                    ));
                }
                Event::DocumentStart(_) => {
                    let (event, pos) = self.next()?;
                    if matches!(event, Event::DocumentEnd) {
                        continue;
                    }
                    root = Some(self.node(event, pos, 0)?);
                    let (end, pos) = self.next()?;
                    if !matches!(end, Event::DocumentEnd) {
                        return Err(self.error(pos, "unexpected content after the document"));
                    }
                }
                _ => return Err(self.error(pos, "unexpected YAML structure")),
            }
        }
    }

    fn node(&mut self, event: Event<'a>, pos: Pos, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.count(pos, 1)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                if tag.is_some() {
                    return Err(self.error(
                        pos,
                        "YAML tags (`!name`) are not used in policies; remove the tag",
                    ));
                }
                let plain = matches!(style, ScalarStyle::Plain);
                let value = Value::Scalar {
                    text: text.into_owned(),
                    plain,
                };
                (Node { pos, value }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.reject_tag(tag.is_some(), pos)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_pos) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, item_pos, depth + 1)?);
                }
                (
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                self.reject_tag(tag.is_some(), pos)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (event, key_pos) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, key_pos, depth + 1)?;
                    let Value::Scalar { text: key_text, .. } = &key.value else {
                        return Err(self.error(key_pos, "mapping keys must be plain names"));
                    };
                    if let Some((first, _)) = entries.iter().find(
                        |(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key_text),
                    ) {
                        return Err(SyntaxError {
                            pos: key_pos,
                            message: format!(
                                "duplicate key `{key_text}`; each key may appear once in a mapping"
                            ),
                            first: Some(first.pos),
                        });
                    }
                    let (event, value_pos) = self.next()?;
                    let value = self.node(event, value_pos, depth + 1)?;
                    entries.push((key, value));
                }
                (
                    Node {
                        pos,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id).cloned() else {
                    return Err(self.error(pos, "alias refers to an unknown anchor"));
                };
                self.count(pos, node_count(&target))?;
                return Ok(Node {
                    pos,
                    value: target.value,
                });
            }
            _ => return Err(self.error(pos, "unexpected YAML structure")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn reject_tag(&self, tagged: bool, pos: Pos) -> Result<(), SyntaxError> {
        if tagged {
            Err(self.error(
                pos,
                "YAML tags (`!name`) are not used in policies; remove the tag",
            ))
        } else {
            Ok(())
        }
    }

    fn count(&mut self, pos: Pos, nodes: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_NODES {
            return Err(self.error(
                pos,
                format!("the document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            ));
        }
        Ok(())
    }
}

fn node_count(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| node_count(k) + node_count(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let root = parse("a:\n  b: [1, 2]\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        let (key, value) = &entries[0];
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let Value::Map(inner) = &value.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, column: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 2, column: 6 });
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_positions() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, column: 1 });
        assert_eq!(err.first, Some(Pos { line: 1, column: 1 }));
    }

    #[test]
    fn alias_bombs_are_refused_instead_of_expanded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("more than"), "{err:?}");
    }

    #[test]
    fn several_documents_are_rejected() {
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn empty_text_is_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(plain_scalar_kind("22"), PlainKind::Int);
        assert_eq!(plain_scalar_kind("0x16"), PlainKind::Int);
        assert_eq!(plain_scalar_kind("true"), PlainKind::Bool);
        assert_eq!(plain_scalar_kind("~"), PlainKind::Null);
        assert_eq!(plain_scalar_kind("1.5"), PlainKind::Float);
        assert_eq!(plain_scalar_kind("2023-06-01"), PlainKind::Str);
        assert_eq!(plain_scalar_kind("example.com"), PlainKind::Str);
        assert_eq!(plain_scalar_kind("1.2.3.4"), PlainKind::Str);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let doc = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&doc).is_err());
    }
}
