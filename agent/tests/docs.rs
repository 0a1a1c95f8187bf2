//! The README repeats some of the crate docs; these tests keep the copies identical, so they
//! cannot drift. A copied table sits between `<!-- exit-codes: <source file> -->` and
//! `<!-- /exit-codes -->` in the README and must equal the table in that file's `//!` docs.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table rows (`| … |`) among `lines`, up to the first line that is not one.
fn table<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_exit_code_tables_are_the_crate_docs() {
    let readme = read("README.md");
    const OPEN: &str = "<!-- exit-codes: ";
    let mut checked = Vec::new();
    for (at, _) in readme.match_indices(OPEN) {
        let rest = &readme[at + OPEN.len()..];
        let source = &rest[..rest.find(" -->").expect("a closed marker")];
        let end = rest
            .find("<!-- /exit-codes -->")
            .unwrap_or_else(|| panic!("README: no end marker after {source}"));
        let in_readme = table(rest[..end].lines().skip(1));
        let text = read(source);
        let in_docs = table(
            text.lines()
                .filter_map(|l| l.strip_prefix("//!"))
                .skip_while(|l| !l.contains("| code |")),
        );
        assert!(
            in_readme.len() >= 6,
            "README table of {source}: {in_readme:#?}"
        );
        assert_eq!(
            in_readme, in_docs,
            "README.md and {source} list different exit codes"
        );
        checked.push(source.to_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "agent/src/error.rs",
            "agent/src/proxy/mod.rs",
            "credential-plugin/src/main.rs"
        ],
        "the README's exit-code tables"
    );
}
