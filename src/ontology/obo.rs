//! A reader for the parts of OBO 1.2/1.4 that make a term hierarchy.
//!
//! Read: the header tags `ontology` and `data-version`; in `[Term]` stanzas `id`, `name`,
//! `synonym` (the `EXACT` ones; OBO 1.0 `exact_synonym` too), `is_a`, `relationship: part_of`
//! (see [`OboOptions`]) and `is_obsolete`. Other tags and other stanzas (`[Typedef]`,
//! `[Instance]`) are skipped; `!` comments and trailing `{...}` qualifiers are stripped.
//! A line that is not `tag: value`, a stanza header, a comment or blank is an error naming the
//! file and the line.

use std::collections::HashMap;
use std::path::Path;

use super::{parse_error, Ontology, Parsed, Term};
use crate::error::Result;

/// How an OBO file becomes a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OboOptions {
    /// Follow `relationship: part_of X` (and `BFO:0000050`) as a parent edge, as the
    /// cellxgene-ontology-guide files do (default `true`).
    pub part_of: bool,
}

impl Default for OboOptions {
    fn default() -> Self {
        OboOptions { part_of: true }
    }
}

impl OboOptions {
    /// Only `is_a` lines make parents.
    pub fn is_a_only() -> Self {
        OboOptions { part_of: false }
    }
}

/// A `[Term]` stanza being read.
struct Stanza {
    line: usize,
    id: Option<String>,
    term: Term,
}

/// Parses OBO text; `source` names the file in errors.
pub(crate) fn parse(text: &str, source: &Path, options: &OboOptions) -> Result<Ontology> {
    let err = |line: usize, message: String| parse_error(source, format!("line {line}: {message}"));
    let mut header_name: Option<String> = None;
    let mut version: Option<String> = None;
    let mut in_header = true;
    let mut current: Option<Stanza> = None;
    let mut terms: Vec<Term> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();

    let mut finish = |stanza: Option<Stanza>, terms: &mut Vec<Term>| -> Result<()> {
        let Some(mut s) = stanza else {
            return Ok(());
        };
        let Some(id) = s.id else {
            return Err(parse_error(
                source,
                format!(
                    "line {}: a [Term] stanza without an `id:` line; expected `id: PREFIX:NUMBER`",
                    s.line
                ),
            ));
        };
        if let Some(prev) = first_line.insert(id.clone(), s.line) {
            return Err(parse_error(
                source,
                format!(
                    "line {}: term {id} is defined again (first at line {prev}); expected one \
                     [Term] stanza per id",
                    s.line
                ),
            ));
        }
        s.term.id = id;
        s.term.parents.sort_unstable();
        s.term.parents.dedup();
        terms.push(s.term);
        Ok(())
    };

    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('!') {
            continue;
        }
        if line.starts_with('[') {
            let Some(kind) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(err(
                    line_no,
                    format!("expected a stanza header such as `[Term]`, found `{line}`"),
                ));
            };
            finish(current.take(), &mut terms)?;
            in_header = false;
            if kind == "Term" {
                current = Some(Stanza {
                    line: line_no,
                    id: None,
                    term: Term {
                        id: String::new(),
                        label: String::new(),
                        synonyms: Vec::new(),
                        parents: Vec::new(),
                        deprecated: false,
                    },
                });
            }
            continue;
        }
        let Some((tag, value)) = line.split_once(':') else {
            return Err(err(
                line_no,
                format!(
                    "expected `tag: value` or a stanza header, found `{}`",
                    clip(line)
                ),
            ));
        };
        let tag = tag.trim();
        if tag.is_empty() || tag.contains(char::is_whitespace) {
            return Err(err(
                line_no,
                format!(
                    "expected `tag: value` or a stanza header, found `{}`",
                    clip(line)
                ),
            ));
        }
        let value = value.trim();
        if in_header {
            match tag {
                "ontology" => header_name = Some(strip_comment(value).trim().to_string()),
                "data-version" => version = Some(strip_comment(value).trim().to_string()),
                _ => {}
            }
            continue;
        }
        let Some(stanza) = current.as_mut() else {
            // Inside a [Typedef] or [Instance] stanza.
            continue;
        };
        match tag {
            "id" => {
                let id = first_token(value)
                    .ok_or_else(|| err(line_no, "expected a term id after `id:`".to_string()))?;
                if let Some(prev) = &stanza.id {
                    return Err(err(
                        line_no,
                        format!("a second `id:` ({id}) in the stanza of {prev}"),
                    ));
                }
                stanza.id = Some(id.to_string());
            }
            // The first name counts.
            "name" if stanza.term.label.is_empty() => {
                stanza.term.label = unescape(strip_qualifiers(strip_comment(value)).trim());
            }
            "synonym" | "exact_synonym" => {
                let (text, scope) = synonym(value).ok_or_else(|| {
                    err(
                        line_no,
                        format!(
                            "expected a quoted synonym such as `synonym: \"T lymphocyte\" EXACT []`, found `{}`",
                            clip(line)
                        ),
                    )
                })?;
                if tag == "exact_synonym" || scope == Some("EXACT") {
                    stanza.term.synonyms.push(text);
                }
            }
            "is_a" => {
                let parent = first_token(strip_comment(value))
                    .ok_or_else(|| err(line_no, "expected a term id after `is_a:`".to_string()))?;
                stanza.term.parents.push(parent.to_string());
            }
            "relationship" => {
                let mut tokens = strip_comment(value).split_whitespace();
                let (Some(relation), Some(target)) = (tokens.next(), tokens.next()) else {
                    return Err(err(
                        line_no,
                        format!(
                            "expected `relationship: RELATION TERM_ID`, found `{}`",
                            clip(line)
                        ),
                    ));
                };
                if options.part_of && matches!(relation, "part_of" | "BFO:0000050") {
                    stanza.term.parents.push(target.to_string());
                }
            }
            "is_obsolete" => {
                stanza.term.deprecated = strip_comment(value).trim() == "true";
            }
            _ => {}
        }
    }
    finish(current.take(), &mut terms)?;
    if terms.is_empty() {
        return Err(parse_error(
            source,
            "no [Term] stanza; expected an OBO file (`format-version: 1.2`, then `[Term]` stanzas)",
        ));
    }
    let name = header_name
        .filter(|n| !n.is_empty())
        .map(|n| n.to_uppercase())
        .unwrap_or_else(|| {
            source
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    Ontology::build(
        Parsed {
            name,
            version: version.filter(|v| !v.is_empty()),
            terms,
            given: None,
        },
        source,
    )
}

/// The value up to its first unescaped `!` outside quotes (an OBO comment).
fn strip_comment(value: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '!' if !quoted => return value[..i].trim_end(),
            _ => {}
        }
    }
    value
}

/// The value without a trailing `{...}` qualifier block.
fn strip_qualifiers(value: &str) -> &str {
    let v = value.trim_end();
    if v.ends_with('}') {
        if let Some(i) = v.rfind('{') {
            return v[..i].trim_end();
        }
    }
    v
}

fn first_token(value: &str) -> Option<&str> {
    value.split_whitespace().next()
}

/// OBO escapes: `\"`, `\\`, `\!`, `\n`, `\t`, ...
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('W') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// `"text" SCOPE [TYPE] [xrefs] {qualifiers}` -> (text, scope).
fn synonym(value: &str) -> Option<(String, Option<&str>)> {
    let rest = value.trim_start().strip_prefix('"')?;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end?;
    let text = unescape(&rest[..end]);
    let scope = rest[end + 1..]
        .split_whitespace()
        .next()
        .filter(|s| matches!(*s, "EXACT" | "BROAD" | "NARROW" | "RELATED"));
    Some((text, scope))
}

/// A line shortened for an error message.
fn clip(line: &str) -> String {
    const MAX: usize = 80;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}
