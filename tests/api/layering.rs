//! The module graph's arrows (design.md, "Layout"): checked on the source so that a new
//! import the wrong way fails here, not in a review. Unit-test files (`tests.rs`) may look
//! across: a domain test checks that the ledger's views read what the domain writes.

use std::path::Path;

/// Every `.rs` file under `dir` with the lines that name `forbidden`.
fn imports(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&path).expect("source file");
                for (n, line) in text.lines().enumerate() {
                    // Docs may name a module; only code imports it.
                    let code = line.trim_start();
                    if !code.starts_with("//") && forbidden.iter().any(|f| code.contains(f)) {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn api_does_not_reach_into_the_workers() {
    let found = imports("src/api", &["crate::workers", "workers::"]);
    assert!(
        found.is_empty(),
        "api/ imports workers/:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_ledger_and_the_domain_do_not_know_the_http_layer() {
    let found = imports("src/ledger", &["crate::api", "crate::workers"]);
    assert!(
        found.is_empty(),
        "ledger/ imports api/ or workers/:\n{}",
        found.join("\n")
    );
    let found = imports(
        "src/domain",
        &[
            "crate::api",
            "crate::workers",
            "crate::ledger",
            "crate::bank",
        ],
    );
    assert!(
        found.is_empty(),
        "domain/ imports another pisgate module:\n{}",
        found.join("\n")
    );
}
