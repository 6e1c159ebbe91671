//! File access inside folders that others can write to: the inbox, the capture folder,
//! the model store's staging area. A link planted there, or a `..` in a name that came
//! over the network, must not carry a read or a write outside the folder. Reads take
//! regular files only, writes create a new file (never opening through a link) and
//! rename it into place, and every folder written into must be a real folder.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::Path;

/// A regular file, not a symbolic link (to a file or to anything else).
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// A symbolic link, whatever it points at (or nothing).
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Make sure `dir` is a real folder, creating it (and its parents) when missing. A link
/// to a folder elsewhere, or a file, in its place is an error: writing through it would
/// land outside.
pub fn real_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(meta) => Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {} stands where a folder should be; refusing to write through it",
                dir.display(),
                if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "a file"
                }
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir_all(dir),
        Err(e) => Err(e),
    }
}

/// Open `path` as a new file for writing. Whatever non-folder stands there (a stale
/// partial file, a planted link) is removed first, and the open itself refuses an
/// existing name (`O_EXCL`, which also refuses a link made in between), so a write never
/// follows a link.
pub fn create_new(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Read a regular file; a symbolic link is refused, not followed.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    if is_symlink(path) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{}: a symbolic link; not followed", path.display()),
        ));
    }
    std::fs::read(path)
}

/// A relative path made of plain names only: no `..`, no `.`, no root, no empty name. Names
/// that came over the network must pass this before they are joined to a folder.
pub fn is_plain_relative(path: &str) -> bool {
    path.split('/')
        .all(|name| !matches!(name, "" | "." | "..") && !name.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_pass() {
        assert!(is_plain_relative("cat/1-2.jpg"));
        for bad in [
            "",
            "/etc/passwd",
            "../x.jpg",
            "cat/../../x",
            "./x",
            "cat/.",
            "cat//x",
        ] {
            assert!(!is_plain_relative(bad), "{bad:?} passed");
        }
    }

    #[test]
    fn a_planted_link_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"keep").expect("write");
        let inside = dir.path().join("inside");
        std::fs::create_dir(&inside).expect("mkdir");
        let planted = inside.join("x.partial");
        std::os::unix::fs::symlink(&outside, &planted).expect("symlink");
        assert!(read_regular(&planted).is_err());
        use std::io::Write;
        create_new(&planted)
            .and_then(|mut f| f.write_all(b"new"))
            .expect("create");
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
        assert!(is_regular_file(&planted));

        let linked_dir = dir.path().join("linked");
        std::os::unix::fs::symlink(&inside, &linked_dir).expect("symlink");
        let error = real_dir(&linked_dir).expect_err("a link is not a folder");
        assert!(error.to_string().contains("a symbolic link"), "{error}");
        real_dir(&dir.path().join("new/deeper")).expect("created");
        real_dir(&inside).expect("exists");
    }
}
