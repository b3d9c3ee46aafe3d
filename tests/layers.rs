//! The crate's layering, checked from its source text: which top-level
//! module may name which (docs/architecture.md). Owns no runtime code and
//! never builds or runs the proxy; it reads `src/` as text.
//!
//! Every `crate::<module>` path (in `use` lines and inline, macros
//! included) counts as a dependency of the top-level module whose file
//! holds it. The test fails on any cycle between top-level modules, on an
//! import against the declared order, on I/O names in the sans-I/O
//! modules, and on the establishment module naming the handshake paths
//! that use it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first: a module may name modules before it, never after it.
const ORDER: &[&str] = &[
    "net",
    "stream",
    "tls",
    "stats",
    "session",
    "shard",
    "dns_watch",
    "control",
    "supervisor",
];

/// Pure parts: no sockets, no executor. Their tests feed them bytes.
const SANS_IO: &[&str] = &["codec", "handshake", "config", "routing", "proxy_protocol"];

/// Pure modules that may name one ordered module, and why. The
/// configuration holds the operator's TLS settings (files already read and
/// checked), whose type lives in `tls`; `tls` never names the configuration,
/// so there is no cycle (checked above).
const PURE_MAY_NAME: &[(&str, &str)] = &[("config", "tls")];

/// Names that mean I/O or the executor.
const IO_NAMES: &[&str] = &[
    "glommio",
    "socket2",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "UnixListener",
    "to_socket_addrs",
    "libc::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (a file or a folder).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).expect("readable source folder") {
        let p = entry.expect("readable entry").path();
        if p.is_dir() {
            files.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The crate's top-level modules and the files of each (`lib.rs` and
/// `main.rs` wire them together and belong to none).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src()).expect("src/ exists") {
        let p = entry.expect("readable entry").path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        if p.is_dir() || p.extension().is_some_and(|e| e == "rs") {
            modules
                .entry(name)
                .or_insert_with(Vec::new)
                .extend(rust_files(&p));
        }
    }
    modules
}

/// The text without comments: `//` to the end of the line (doc comments
/// too) and `/* */` blocks. String literals are kept; no `crate::` path
/// in this crate's literals is meant as code, and none exists today.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every `crate::` path in `code`, including each
/// item of a `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` (in macros) counts; `some_crate::` does not.
        let before = rest[..i].chars().next_back();
        let standalone = !matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if !standalone {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident_at(item.trim());
                if !name.is_empty() {
                    found.insert(name.to_string());
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

/// Exported macros (`crate::session_log`) by the module that defines them.
fn macro_owners(modules: &BTreeMap<String, Vec<PathBuf>>) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for (module, files) in modules {
        for file in files {
            let code = code_of(&fs::read_to_string(file).unwrap());
            let mut rest = code.as_str();
            while let Some(i) = rest.find("macro_rules!") {
                rest = &rest[i + "macro_rules!".len()..];
                let name = ident_at(rest.trim_start());
                owners.insert(name.to_string(), module.clone());
            }
        }
    }
    owners
}

/// Module -> the other top-level modules it names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let macros = macro_owners(&modules);
    let mut graph = BTreeMap::new();
    for (module, files) in &modules {
        let mut deps = BTreeSet::new();
        for file in files {
            let code = code_of(&fs::read_to_string(file).unwrap());
            for name in crate_paths(&code) {
                let target = macros.get(&name).cloned().unwrap_or(name);
                if modules.contains_key(&target) && target != *module {
                    deps.insert(target);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

/// A cycle through `start`, as the path that closes it, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = dependencies();
    assert!(
        graph.contains_key("session") && graph.contains_key("stats"),
        "the module scan found {:?}",
        graph.keys()
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn imports_follow_the_declared_order() {
    let graph = dependencies();
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut upward = Vec::new();
    for (module, deps) in &graph {
        let Some(mine) = rank(module) else { continue };
        for dep in deps {
            if rank(dep).is_some_and(|theirs| theirs > mine) {
                upward.push(format!("{module} names {dep}"));
            }
        }
    }
    // The sans-I/O modules sit below everything: they name none of the
    // ordered ones, but for the exceptions listed in `PURE_MAY_NAME`.
    for module in SANS_IO {
        for dep in graph.get(*module).into_iter().flatten() {
            if rank(dep).is_some() && !PURE_MAY_NAME.contains(&(*module, dep.as_str())) {
                upward.push(format!("{module} names {dep}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layering: {upward:#?}"
    );
}

#[test]
fn sans_io_modules_name_no_sockets_and_no_executor() {
    let modules = modules();
    let mut found = Vec::new();
    for module in SANS_IO {
        let files = modules
            .get(*module)
            .unwrap_or_else(|| panic!("module {module} not found"));
        for file in files {
            let code = code_of(&fs::read_to_string(file).unwrap());
            for name in IO_NAMES {
                if code.contains(name) {
                    found.push(format!("{} uses {name}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "I/O in sans-I/O modules: {found:#?}");
}

#[test]
fn establishment_never_names_the_paths_that_use_it() {
    let folder = src().join("session").join("establish");
    let mut found = Vec::new();
    for file in rust_files(&folder) {
        let code = code_of(&fs::read_to_string(&file).unwrap());
        for path in ["driver", "transparent", "passthrough"] {
            let named = [
                format!("session::{path}"),
                format!("super::super::{path}"),
                format!("super::{path}"),
            ];
            if named.iter().any(|n| code.contains(n.as_str())) {
                found.push(format!("{} names {path}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_scanner_sees_paths_groups_and_macros() {
    let code = code_of(
        "use crate::{net, stats::X};\n// use crate::shard;\nlet a = $crate::session::f();\nuse some_crate::x;\n",
    );
    let paths = crate_paths(&code);
    let expected: BTreeSet<String> = ["net", "stats", "session"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(paths, expected);
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle_from(&graph, "a").map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_string())
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, "a"), None);
}
