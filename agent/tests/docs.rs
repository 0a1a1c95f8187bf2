//! The README repeats some of the crate docs; these tests keep the copies identical, so they
//! cannot drift.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table rows (`| … |`) of `text`.
fn rows<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_exit_codes_are_the_crate_docs() {
    let readme = read("../README.md");
    let start = readme
        .find("<!-- exit-codes: agent/src/error.rs -->")
        .expect("README: the exit-codes marker");
    let end = readme[start..]
        .find("<!-- /exit-codes -->")
        .expect("README: the end of the exit-codes table")
        + start;
    let in_readme = rows(readme[start..end].lines());
    let source = read("src/error.rs");
    let in_docs = rows(
        source
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .skip_while(|l| !l.contains("| code |")),
    );
    assert_eq!(in_readme.len(), 9, "README table: {in_readme:#?}");
    assert_eq!(
        in_readme, in_docs,
        "README.md and agent/src/error.rs list different exit codes"
    );
}
