//! The repository's structure, checked: README's Layout names only paths
//! that exist, and the library's layers import in one direction only —
//! api (`port`, `handle`, `op`) → core (`core/`) → driver (`driver/`, the
//! backend contract) → backends (`driver/uring`, `driver/epoll`) — with
//! the leaf modules (`buf`, `error`, `sync`) usable by all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level crate modules a file names through `crate::…` paths,
/// outside comments.
fn crate_imports(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut mods = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::` in macros, and `crate::{a, b}` groups, are not
            // module names of ours.
            let macro_path = rest[..i].ends_with('$');
            if !name.is_empty() && !macro_path {
                mods.insert(name);
            } else if let Some(group) = after.strip_prefix('{') {
                let group: String = group.chars().take_while(|c| *c != '}').collect();
                for part in group.split(',') {
                    let n: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !n.is_empty() {
                        mods.insert(n);
                    }
                }
            }
            rest = after;
        }
    }
    mods
}

/// Files under `dir` that name a crate module outside `allowed`, with the
/// names.
fn violations(dir: &Path, allowed: &[&str]) -> Vec<String> {
    rust_files(dir)
        .into_iter()
        .filter_map(|f| {
            let bad: Vec<String> = crate_imports(&f)
                .into_iter()
                .filter(|m| !allowed.contains(&m.as_str()))
                .collect();
            (!bad.is_empty()).then(|| format!("{}: {}", f.display(), bad.join(", ")))
        })
        .collect()
}

/// Leaf modules every layer may use.
const LEAVES: [&str; 3] = ["buf", "error", "sync"];

#[test]
fn backends_import_only_the_driver_contract() {
    for backend in ["driver/uring", "driver/epoll"] {
        let v = violations(&src().join(backend), &["driver", "buf", "error"]);
        assert!(
            v.is_empty(),
            "{backend} reaches past the contract:\n{}",
            v.join("\n")
        );
    }
}

#[test]
fn the_driver_knows_nothing_of_the_core_or_the_api() {
    let mut allowed = vec!["driver"];
    allowed.extend(LEAVES);
    let v = violations(&src().join("driver"), &allowed);
    assert!(
        v.is_empty(),
        "driver/ imports a layer above it:\n{}",
        v.join("\n")
    );
}

#[test]
fn the_core_knows_nothing_of_the_api() {
    let mut allowed = vec!["core", "driver"];
    allowed.extend(LEAVES);
    let v = violations(&src().join("core"), &allowed);
    assert!(v.is_empty(), "core/ imports the api:\n{}", v.join("\n"));
}

#[test]
fn the_leaves_import_no_layer() {
    for leaf in LEAVES {
        let f = src().join(format!("{leaf}.rs"));
        let bad: Vec<String> = crate_imports(&f)
            .into_iter()
            .filter(|m| !LEAVES.contains(&m.as_str()))
            .collect();
        assert!(bad.is_empty(), "{leaf}.rs imports {bad:?}");
    }
}

/// README's "Layout" block: the first word of every line that names a
/// path (`crates/cport/`, `src/lib.rs`) exists — indented lines relative
/// to the last unindented one.
#[test]
fn readme_layout_names_existing_paths() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Layout")
        .expect("README has a Layout section");
    let block = &readme[start..];
    let open = block.find("```").expect("a code block") + 3;
    let body = &block[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").expect("the block ends")];
    let mut base = PathBuf::new();
    let mut checked = 0;
    for line in body.lines() {
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        let looks_like_path = word.ends_with('/')
            || word
                .rsplit_once('.')
                .is_some_and(|(_, ext)| ["rs", "h", "c", "cpp", "md", "toml", "sh"].contains(&ext));
        if !looks_like_path {
            continue; // a continuation of the previous line's description
        }
        let path = if line.starts_with(' ') {
            repo().join(&base).join(word)
        } else {
            base = PathBuf::from(word);
            repo().join(word)
        };
        assert!(
            path.exists(),
            "README Layout names {word} ({}), which does not exist",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} paths found in README's Layout"
    );
}
