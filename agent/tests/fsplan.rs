//! `fsplan`: what a plan would change under a root (`changes`, `diff`), and applying it
//! (temporary file + rename in the target's directory, mode set, parents created,
//! idempotent, nothing left behind on failure). Everything under a `TempDir` root.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use satellite_agent::fsplan::{Change, FileSpec, Plan};

fn plan(files: &[(&str, &str, u32)]) -> Plan {
    let mut plan = Plan::default();
    for (path, contents, mode) in files {
        plan.add(FileSpec::new(
            Path::new(path),
            (*contents).to_owned(),
            *mode,
        ));
    }
    plan
}

fn root() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `path` (absolute, as in a plan) under `root`.
fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write(root: &Path, path: &str, contents: &str, mode: u32) {
    let target = at(root, path);
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(&target, contents).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `dir`, relative, sorted (directories end with `/`).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Leftover staging files (`.satellite-*`) anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| {
            Path::new(p.trim_end_matches('/'))
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".satellite-"))
        })
        .collect()
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

/// (path, kind of change) for comparison; the `Update` diff is checked separately.
fn kinds(changes: &[(&FileSpec, Change)]) -> Vec<(String, String)> {
    changes
        .iter()
        .map(|(file, change)| {
            let kind = match change {
                Change::Create => "create".to_owned(),
                Change::Update(_) => "update".to_owned(),
                Change::Mode(from, to) => format!("mode {from:o}->{to:o}"),
            };
            (file.path.display().to_string(), kind)
        })
        .collect()
}

#[test]
fn changes_classifies_created_changed_unchanged_and_mode_only() {
    let root = root();
    let root = root.path();
    write(root, "/etc/same", "same\n", 0o644);
    write(root, "/etc/changed", "old\nkept\n", 0o644);
    write(root, "/etc/mode", "m\n", 0o644);
    write(root, "/etc/both", "old\n", 0o644);
    let plan = plan(&[
        ("/etc/new", "new\n", 0o644),
        ("/etc/same", "same\n", 0o644),
        ("/etc/changed", "new\nkept\n", 0o644),
        ("/etc/mode", "m\n", 0o600),
        ("/etc/both", "new\n", 0o600),
        ("/var/lib/deep/er/new", "x", 0o644),
    ]);
    let changes = plan.changes(root).unwrap();
    let want: Vec<(String, String)> = [
        ("/etc/new", "create"),
        ("/etc/changed", "update"),
        ("/etc/mode", "mode 644->600"),
        ("/etc/both", "update"),
        ("/var/lib/deep/er/new", "create"),
    ]
    .iter()
    .map(|(p, k)| ((*p).to_owned(), (*k).to_owned()))
    .collect();
    assert_eq!(kinds(&changes), want, "in plan order, unchanged omitted");

    let Change::Update(diff) = &changes[1].1 else {
        panic!("{:?}", changes[1])
    };
    assert!(
        diff.starts_with("--- /etc/changed\n+++ /etc/changed\n"),
        "header names the host path, not the root: {diff}"
    );
    assert!(
        diff.contains("\n-old\n") && diff.contains("\n+new\n") && diff.contains("\n kept\n"),
        "{diff}"
    );
    assert!(
        !diff.contains(&root.display().to_string()),
        "the root is not in the diff: {diff}"
    );

    // changes() only reads.
    assert_eq!(
        fs::read_to_string(at(root, "/etc/changed")).unwrap(),
        "old\nkept\n"
    );
    assert!(!at(root, "/etc/new").exists());
}

#[test]
fn a_plan_on_its_own_output_has_no_changes() {
    let root = root();
    let plan = plan(&[("/a", "a\n", 0o644), ("/b/c", "c\n", 0o600)]);
    assert_eq!(plan.changes(root.path()).unwrap().len(), 2);
    plan.apply(root.path()).unwrap();
    assert_eq!(kinds(&plan.changes(root.path()).unwrap()), []);
    assert_eq!(plan.diff(root.path()).unwrap(), "");
}

#[test]
fn diff_shows_new_files_in_full_updates_as_unified_diffs_and_mode_changes() {
    let root = root();
    let root = root.path();
    write(root, "/etc/changed", "a\nb\n", 0o644);
    write(root, "/etc/mode", "m\n", 0o640);
    write(root, "/etc/same", "s\n", 0o644);
    let plan = plan(&[
        ("/etc/new.conf", "line one\nline two\n", 0o600),
        ("/etc/same", "s\n", 0o644),
        ("/etc/changed", "a\nB\n", 0o644),
        ("/etc/mode", "m\n", 0o644),
    ]);
    let diff = plan.diff(root).unwrap();
    let want_new = "--- /dev/null\n+++ /etc/new.conf (new, mode 600)\n+line one\n+line two\n";
    assert!(diff.starts_with(want_new), "{diff}");
    assert!(
        diff.contains("--- /etc/changed\n+++ /etc/changed\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n"),
        "{diff}"
    );
    assert!(diff.ends_with("mode /etc/mode: 640 -> 644\n"), "{diff}");
    assert!(
        !diff.contains("/etc/same"),
        "unchanged files are not shown: {diff}"
    );
}

#[test]
fn apply_creates_parents_sets_modes_and_reports_what_it_changed() {
    let root = root();
    let root = root.path();
    let plan = plan(&[
        ("/etc/kubernetes/pki/ca.crt", "CA\n", 0o644),
        ("/etc/kubernetes/kubelet/kubeconfig", "secretless\n", 0o600),
        ("/usr/local/bin/tool", "#!/bin/sh\n", 0o755),
        ("/etc/group-readable", "g\n", 0o640),
    ]);
    let changed = plan.apply(root).unwrap();
    let want: Vec<PathBuf> = plan
        .files()
        .iter()
        .map(|f| at(root, &f.path.display().to_string()))
        .collect();
    assert_eq!(changed, want, "the targets under the root, in plan order");
    for file in plan.files() {
        let target = at(root, &file.path.display().to_string());
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            file.contents,
            "{target:?}"
        );
        assert_eq!(
            mode(&target),
            file.mode,
            "{target:?}: mode exactly as planned"
        );
    }
    // Created parents: 0755 less the umask.
    for dir in [
        "/etc",
        "/etc/kubernetes",
        "/etc/kubernetes/pki",
        "/usr/local/bin",
    ] {
        assert_eq!(mode(&at(root, dir)), 0o755 & !umask(), "{dir}");
    }
    assert_eq!(temp_files(root), Vec::<String>::new());
}

#[test]
fn the_planned_mode_replaces_the_files_mode() {
    // The planned mode wins over what the file had, in both directions.
    let root = root();
    let root = root.path();
    write(root, "/a", "a\n", 0o666);
    write(root, "/b", "b\n", 0o600);
    write(root, "/c", "old\n", 0o644);
    let plan = plan(&[
        ("/a", "a\n", 0o600),
        ("/b", "b\n", 0o644),
        ("/c", "new\n", 0o600),
    ]);
    // When the contents change too, the diff (`--dry-run`) also shows the mode change.
    let diff = plan.diff(root).unwrap();
    assert!(diff.contains("mode /c: 644 -> 600"), "{diff}");
    let changed = plan.apply(root).unwrap();
    assert_eq!(changed, [at(root, "/a"), at(root, "/b"), at(root, "/c")]);
    assert_eq!(
        [
            mode(&at(root, "/a")),
            mode(&at(root, "/b")),
            mode(&at(root, "/c"))
        ],
        [0o600, 0o644, 0o600]
    );
}

#[test]
fn a_second_apply_changes_nothing_and_touches_nothing() {
    let root = root();
    let root = root.path();
    let plan = plan(&[("/etc/a", "a\n", 0o644), ("/etc/sub/b", "b\n", 0o600)]);
    assert_eq!(plan.apply(root).unwrap().len(), 2);
    let before: Vec<(u64, i64, i64)> = ["/etc/a", "/etc/sub/b"]
        .iter()
        .map(|p| {
            let m = fs::metadata(at(root, p)).unwrap();
            (m.ino(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    let tree_before = tree(root);
    assert_eq!(plan.apply(root).unwrap(), Vec::<PathBuf>::new());
    let after: Vec<(u64, i64, i64)> = ["/etc/a", "/etc/sub/b"]
        .iter()
        .map(|p| {
            let m = fs::metadata(at(root, p)).unwrap();
            (m.ino(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    assert_eq!(before, after, "unchanged files are not rewritten");
    assert_eq!(tree(root), tree_before);
}

#[test]
fn apply_replaces_by_rename_never_in_place() {
    // An open reader (and a hard link) of the old file keep seeing the old contents: the new
    // contents went to a new inode renamed over the name, so no reader sees a partial file.
    let root = root();
    let root = root.path();
    write(root, "/etc/kubelet.yaml", "old\n", 0o644);
    let target = at(root, "/etc/kubelet.yaml");
    let link = at(root, "/old-link");
    fs::hard_link(&target, &link).unwrap();
    let old_inode = fs::metadata(&target).unwrap().ino();

    let plan = plan(&[("/etc/kubelet.yaml", "new\n", 0o644)]);
    assert_eq!(plan.apply(root).unwrap(), std::slice::from_ref(&target));

    assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
    assert_ne!(
        fs::metadata(&target).unwrap().ino(),
        old_inode,
        "a new inode"
    );
    assert_eq!(
        fs::read_to_string(&link).unwrap(),
        "old\n",
        "old inode untouched"
    );
    // Same directory: a rename across directories could not be atomic; the new inode lives
    // on the target's file system and nothing else appeared anywhere.
    assert_eq!(
        fs::metadata(&target).unwrap().dev(),
        fs::metadata(target.parent().unwrap()).unwrap().dev()
    );
    assert_eq!(tree(root), ["etc/", "etc/kubelet.yaml", "old-link"]);
}

#[test]
fn apply_under_a_regular_file_fails_and_writes_nothing() {
    let root = root();
    let root = root.path();
    write(root, "/etc/kubernetes", "I am a file\n", 0o644);
    let plan = plan(&[
        (
            "/etc/sysctl.d/90-satellite.conf",
            "vm.overcommit_memory = 1\n",
            0o644,
        ),
        ("/etc/kubernetes/pki/ca.crt", "CA\n", 0o644),
    ]);
    let before = tree(root);
    let err = plan.apply(root).expect_err("a path under a regular file");
    let text = err.to_string();
    assert!(text.starts_with("reading "), "{text}");
    assert!(
        err.source.kind() == std::io::ErrorKind::NotADirectory,
        "{text}: {:?}",
        err.source.kind()
    );
    // The error names the file that could not be read, not the root.
    assert_eq!(err.path, at(root, "/etc/kubernetes/pki/ca.crt"), "{text}");
    assert_eq!(tree(root), before, "nothing written, no temp files");
    assert!(plan.diff(root).is_err(), "--dry-run fails the same way");
}

#[test]
fn a_failure_while_staging_leaves_no_file_and_no_temp_file() {
    // The first file is staged (temp file in /etc/a), then staging the second fails (its
    // parent is a dangling symlink: reading says "not found", creating the directory fails).
    // Nothing may be renamed into place, and the first temp file must be gone.
    let root = root();
    let root = root.path();
    write(root, "/etc/a/existing", "old\n", 0o644);
    std::os::unix::fs::symlink("nowhere", at(root, "/etc/broken")).unwrap();
    let plan = plan(&[
        ("/etc/a/existing", "new\n", 0o644),
        ("/etc/a/created", "created\n", 0o644),
        ("/etc/broken/file", "x\n", 0o644),
    ]);
    assert_eq!(
        kinds(&plan.changes(root).unwrap())
            .into_iter()
            .map(|(_, k)| k)
            .collect::<Vec<_>>(),
        ["update", "create", "create"]
    );
    let before = tree(root);
    let err = plan
        .apply(root)
        .expect_err("staging under a dangling symlink");
    assert_eq!(err.path, at(root, "/etc/broken/file"), "{err}");
    assert!(
        err.to_string()
            .contains(&at(root, "/etc/broken/file").display().to_string()),
        "{err}"
    );
    assert_eq!(tree(root), before, "no file renamed, no temp file left");
    assert_eq!(
        fs::read_to_string(at(root, "/etc/a/existing")).unwrap(),
        "old\n"
    );
    assert_eq!(temp_files(root), Vec::<String>::new());
}

#[test]
fn a_planned_file_that_is_a_directory_is_an_error_not_a_change() {
    let root = root();
    let root = root.path();
    fs::create_dir_all(at(root, "/etc/kubernetes/kubelet/config.yaml")).unwrap();
    let plan = plan(&[("/etc/kubernetes/kubelet/config.yaml", "x\n", 0o644)]);
    assert!(plan.changes(root).is_err());
    assert!(plan.apply(root).is_err());
    assert!(at(root, "/etc/kubernetes/kubelet/config.yaml").is_dir());
    assert_eq!(temp_files(root), Vec::<String>::new());
}

#[test]
fn files_keep_plan_order() {
    let plan = plan(&[("/z", "", 0o644), ("/a", "", 0o600), ("/m", "", 0o644)]);
    let paths: Vec<String> = plan
        .files()
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    assert_eq!(paths, ["/z", "/a", "/m"]);
}

#[test]
fn an_empty_file_is_created_and_then_unchanged() {
    let root = root();
    let plan = plan(&[("/etc/empty", "", 0o644)]);
    assert_eq!(
        kinds(&plan.changes(root.path()).unwrap()),
        [("/etc/empty".into(), "create".into())]
    );
    plan.apply(root.path()).unwrap();
    assert_eq!(
        fs::read_to_string(at(root.path(), "/etc/empty")).unwrap(),
        ""
    );
    assert!(plan.changes(root.path()).unwrap().is_empty());
}
