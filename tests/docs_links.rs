//! The documentation's links hold: every relative link in `README.md` and
//! `docs/*.md` names a file that exists and, with a `#fragment`, a heading
//! of that file; every `docs/<page>.md#<anchor>` cited in the code under
//! `src/`, `control/`, `benches/` and `tests/` names an existing page and
//! heading.
//!
//! Reads files only; never follows external (`http:`, `https:`, `mailto:`)
//! links and never needs the network or a built proxy. Anchors are computed
//! the way GitHub renders headings, so a link that passes here works there.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's anchor for a heading's text: lower case, markdown punctuation
/// and other symbols dropped, spaces turned into hyphens.
fn slug(heading: &str) -> String {
    let text = strip_link_targets(heading);
    text.trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` becomes `text`, so a link in a heading anchors by its
/// text only.
fn strip_link_targets(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let Some(close) = rest[i..].find(')') else {
            break;
        };
        out.push_str(&rest[..i]);
        rest = &rest[i + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The lines of a markdown text that are not inside a fenced code block.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push((n + 1, line));
        }
    }
    lines
}

/// Every anchor a markdown file offers, with GitHub's `-1`, `-2` suffixes for
/// repeated headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(markdown) {
        let trimmed = line.trim_start_matches('#');
        let level = line.len() - trimmed.len();
        if level == 0 || level > 6 || !trimmed.starts_with(' ') {
            continue;
        }
        let base = slug(trimmed.trim_end_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The inline link targets of a markdown text, with their line numbers:
/// what stands between `](` and the next `)`, outside code blocks and
/// inline code.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (n, line) in prose_lines(markdown) {
        // Drop inline code spans: `a](b)` inside backticks is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(close) = after.find(')') else {
                break;
            };
            targets.push((n, after[..close].trim().to_string()));
            rest = &after[close..];
        }
    }
    targets
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// What is wrong with one link from `from` (a markdown file) to `target`,
/// if anything.
fn check_link(from: &Path, target: &str) -> Option<String> {
    if is_external(target) {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file has a directory").join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: {} does not exist", file.display()));
    }
    let fragment = fragment?;
    if file.extension().and_then(|e| e.to_str()) != Some("md") {
        return Some(format!(
            "{target}: a #fragment on a file that is not markdown"
        ));
    }
    let text = fs::read_to_string(&file).expect("read a linked page");
    if anchors(&text).contains(fragment) {
        None
    } else {
        Some(format!(
            "{target}: {} has no heading with anchor #{fragment}",
            file.display()
        ))
    }
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("read docs/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// `.rs` files under `dir`, skipping fuzz build output and corpora.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("read a source directory").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | "corpus" | "artifacts") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `docs/<page>.md[#anchor]` in a source text, with line numbers.
fn doc_citations(source: &str) -> Vec<(usize, String)> {
    let page_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let anchor_char = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("docs/") {
            let after = &rest[i + 5..];
            let page_len = after.find(|c: char| !page_char(c)).unwrap_or(after.len());
            let tail = &after[page_len..];
            rest = after;
            // `docs/<page>.md` in prose, or a path that is not a page.
            if page_len == 0 || !tail.starts_with(".md") {
                continue;
            }
            let mut citation = format!("{}.md", &after[..page_len]);
            if let Some(anchor) = tail[3..].strip_prefix('#') {
                let len = anchor
                    .find(|c: char| !anchor_char(c))
                    .unwrap_or(anchor.len());
                citation.push('#');
                citation.push_str(&anchor[..len]);
            }
            found.push((n + 1, citation));
        }
    }
    found
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let mut broken = Vec::new();
    let files = markdown_files();
    assert!(files.len() > 5, "docs/ has its pages: {files:?}");
    for file in &files {
        let text = fs::read_to_string(file).expect("read a page");
        for (line, target) in link_targets(&text) {
            if let Some(problem) = check_link(file, &target) {
                broken.push(format!("{}:{line}: {problem}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_docs_citation_in_the_code_resolves() {
    let mut sources = Vec::new();
    for dir in ["src", "control", "benches", "tests"] {
        rust_files(&root().join(dir), &mut sources);
    }
    assert!(sources.len() > 20, "found the sources: {}", sources.len());
    let readme = root().join("README.md");
    let mut broken = Vec::new();
    let mut cited = 0;
    for file in &sources {
        let text = fs::read_to_string(file).expect("read a source file");
        for (line, citation) in doc_citations(&text) {
            cited += 1;
            // Resolve as the README's link `docs/<page>.md#<anchor>` would.
            if let Some(problem) = check_link(&readme, &format!("docs/{citation}")) {
                broken.push(format!("{}:{line}: {problem}", file.display()));
            }
        }
    }
    assert!(cited > 0, "the code cites docs/ somewhere");
    assert!(
        broken.is_empty(),
        "broken citations:\n{}",
        broken.join("\n")
    );
}

#[test]
fn anchors_follow_github() {
    let page = "# Title\n## `amqpprox_ctl`\n## TLS to brokers (egress)\n## Flags\n### Flags\n\
                ```\n## Not a heading\n```\n## Sessions: end & [cause](x.md)\n";
    let expected: BTreeSet<String> = [
        "title",
        "amqpprox_ctl",
        "tls-to-brokers-egress",
        "flags",
        "flags-1",
        "sessions-end--cause",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(anchors(page), expected);
}

#[test]
fn a_broken_link_or_citation_is_reported() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let page = dir.path().join("page.md");
    fs::write(&page, "# Page\n## Here\n").unwrap();
    assert_eq!(check_link(&page, "#here"), None);
    assert_eq!(check_link(&page, "page.md#here"), None);
    assert!(check_link(&page, "#nowhere").is_some());
    assert!(check_link(&page, "missing.md").is_some());
    assert_eq!(check_link(&page, "https://example.com/#x"), None);
    assert_eq!(
        link_targets("[a](b.md#c) `[x](y)` [d](e)\n```\n[f](g)\n```"),
        vec![(1, "b.md#c".to_string()), (1, "e".to_string())]
    );
    // Built at run time so that this file does not itself cite a missing page.
    let sample = format!(
        "// see docs/routing.md#round-robin, docs/<page>.md and {}/x.md.\n",
        "docs"
    );
    assert_eq!(
        doc_citations(&sample),
        vec![
            (1, "routing.md#round-robin".to_string()),
            (1, "x.md".to_string())
        ]
    );
}
