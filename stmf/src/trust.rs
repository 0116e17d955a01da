//! Which files and directories stmfd trusts: the state directory, the control socket's
//! directory and provider libraries (`docs/security.md`, "Files and providers").
//!
//! A path is trusted when nobody but root and the daemon's user can change what it names.
//! [`check_path`] follows it the way the kernel resolves it, from `/` down, and checks every
//! directory it passes through, every symbolic link on the way and the final object:
//!
//! * an intermediate directory must be owned by root or the daemon's user and not writable
//!   by group or others, unless its sticky bit is set (as `/tmp`: there only an entry's owner
//!   may rename or remove it, and the entries below are checked in turn);
//! * a symbolic link must be owned by root or the daemon's user (its mode means nothing; the
//!   directory holding it is checked as an intermediate one), and its target is checked as
//!   if it had been written in its place;
//! * the final object is checked by its [`Rule`].
//!
//! This is OpenSSH's `StrictModes` walk, extended to symbolic links and without stopping at
//! a home directory: whoever can write any directory on the path can swap what it names.

use std::fmt;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Most symbolic links followed while checking one path (Linux's `MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;

/// What the final object of a path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A directory owned by the daemon's user and writable by nobody else: the state
    /// directory and the control socket's directory.
    PrivateDir,
    /// A regular file owned by root or the daemon's user and writable by nobody else:
    /// a provider library.
    TrustedFile,
}

/// Why a path is not trusted.
#[derive(Debug)]
pub enum Problem {
    /// Group or others may write it.
    Writable {
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by a user the rule does not trust.
    Owner {
        /// Its owner.
        uid: u32,
        /// Whether root is trusted as its owner besides the daemon's user.
        root_ok: bool,
    },
    /// Not of the kind the rule asks for.
    Kind {
        /// What it is.
        found: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// More than [`MAX_LINKS`] symbolic links.
    TooManyLinks,
    /// It could not be examined.
    Io(io::Error),
}

/// A path that is not trusted: which object on it, and why.
#[derive(Debug)]
pub struct Untrusted {
    /// The object at fault (the path checked, or a directory or link on its way).
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
    /// Whether `path` is the final object of the path checked (rather than on its way).
    pub is_final: bool,
    /// The rule it was checked against (for [`Untrusted::fix`]).
    rule: Option<Rule>,
    /// The daemon's effective uid.
    euid: u32,
}

impl Untrusted {
    /// The command that fixes it, for the error message.
    pub fn fix(&self) -> String {
        let p = self.path.display();
        match &self.problem {
            Problem::Writable { .. } if self.rule == Some(Rule::PrivateDir) => {
                format!("chmod 0700 {p}")
            }
            Problem::Writable { .. } => format!("chmod go-w {p}"),
            Problem::Owner { root_ok: true, .. } => format!("chown root {p}"),
            Problem::Owner { .. } => format!("chown {} {p}", self.euid),
            Problem::Kind { expected, .. } => format!("make {p} a {expected}"),
            Problem::TooManyLinks => format!("resolve the symbolic links of {p}"),
            Problem::Io(_) => format!("check {p}"),
        }
    }
}

fn who_writes(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        _ => "others",
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.problem {
            Problem::Writable { mode } => write!(
                f,
                "{p} is writable by {} (mode {:04o})",
                who_writes(*mode),
                mode & 0o7777
            ),
            Problem::Owner { uid, root_ok } => {
                let trusted = if *root_ok {
                    format!("root or uid {} (stmfd's user)", self.euid)
                } else {
                    format!("uid {} that runs stmfd", self.euid)
                };
                write!(f, "{p} is owned by uid {uid}, not by {trusted}")
            }
            Problem::Kind { found, expected } => write!(f, "{p} is {found}, not a {expected}"),
            Problem::TooManyLinks => write!(f, "{p}: more than {MAX_LINKS} symbolic links"),
            Problem::Io(e) => write!(f, "{p}: {e}"),
        }
    }
}

impl std::error::Error for Untrusted {}

/// The file-type and ownership facts a check needs (separate from [`Metadata`] so the rules
/// can be tested without a file system).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Owner.
    pub uid: u32,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
}

impl From<&Metadata> for Facts {
    fn from(m: &Metadata) -> Self {
        Facts {
            uid: m.uid(),
            mode: m.mode(),
        }
    }
}

use libc::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISVTX};

fn kind_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFDIR => "a directory",
        S_IFREG => "a regular file",
        S_IFLNK => "a symbolic link",
        _ => "a special file",
    }
}

/// The role of one object on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A directory the path passes through.
    Ancestor,
    /// A symbolic link the path passes through or ends on.
    Link,
    /// The object the path names.
    Final(Rule),
}

/// Checks one object against its role; `euid` is the daemon's effective uid.
pub fn check_facts(f: Facts, role: Role, euid: u32) -> Result<(), Problem> {
    let trusted_owner = f.uid == euid || f.uid == 0;
    let group_or_other_write = f.mode & 0o022 != 0;
    let kind = f.mode & S_IFMT;
    let expect = |expected: &'static str, want: u32| {
        if kind == want {
            Ok(())
        } else {
            Err(Problem::Kind {
                found: kind_name(f.mode),
                expected,
            })
        }
    };
    match role {
        Role::Link => {
            if !trusted_owner {
                return Err(Problem::Owner {
                    uid: f.uid,
                    root_ok: true,
                });
            }
        }
        Role::Ancestor => {
            expect("directory", S_IFDIR)?;
            if !trusted_owner {
                return Err(Problem::Owner {
                    uid: f.uid,
                    root_ok: true,
                });
            }
            if group_or_other_write && f.mode & S_ISVTX == 0 {
                return Err(Problem::Writable { mode: f.mode });
            }
        }
        Role::Final(Rule::PrivateDir) => {
            expect("directory", S_IFDIR)?;
            if f.uid != euid {
                return Err(Problem::Owner {
                    uid: f.uid,
                    root_ok: false,
                });
            }
            if group_or_other_write {
                return Err(Problem::Writable { mode: f.mode });
            }
        }
        Role::Final(Rule::TrustedFile) => {
            expect("regular file", S_IFREG)?;
            if !trusted_owner {
                return Err(Problem::Owner {
                    uid: f.uid,
                    root_ok: true,
                });
            }
            if group_or_other_write {
                return Err(Problem::Writable { mode: f.mode });
            }
        }
    }
    Ok(())
}

/// The daemon's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks that `path` (made absolute against the current directory) is trusted for `rule`;
/// see the module documentation.
pub fn check_path(path: &Path, rule: Rule) -> Result<(), Untrusted> {
    let euid = euid();
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| Untrusted {
            path: path.to_path_buf(),
            problem: Problem::Io(e),
            is_final: true,
            rule: Some(rule),
            euid,
        })?;
        cwd.join(path)
    };
    let mut links = 0;
    walk(&abs, rule, true, euid, &mut links)
}

fn walk(
    path: &Path,
    rule: Rule,
    is_final: bool,
    euid: u32,
    links: &mut u32,
) -> Result<(), Untrusted> {
    let comps: Vec<Component<'_>> = path.components().collect();
    let mut prefix = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c.as_os_str());
        if matches!(c, Component::CurDir) {
            continue;
        }
        let last = i + 1 == comps.len();
        let fail = |problem, at_final: bool, rule| Untrusted {
            path: prefix.clone(),
            problem,
            is_final: at_final,
            rule,
            euid,
        };
        let m = fs::symlink_metadata(&prefix)
            .map_err(|e| fail(Problem::Io(e), is_final && last, Some(rule)))?;
        let role = if last && is_final {
            Role::Final(rule)
        } else {
            Role::Ancestor
        };
        if m.file_type().is_symlink() {
            check_facts(Facts::from(&m), Role::Link, euid).map_err(|p| fail(p, false, None))?;
            *links += 1;
            if *links > MAX_LINKS {
                return Err(fail(Problem::TooManyLinks, false, None));
            }
            let target = fs::read_link(&prefix).map_err(|e| fail(Problem::Io(e), false, None))?;
            let resolved = match prefix.parent() {
                Some(parent) if target.is_relative() => parent.join(&target),
                _ => target,
            };
            walk(&resolved, rule, last && is_final, euid, links)?;
        } else {
            let role_rule = match role {
                Role::Final(r) => Some(r),
                _ => None,
            };
            check_facts(Facts::from(&m), role, euid)
                .map_err(|p| fail(p, last && is_final, role_rule))?;
        }
    }
    Ok(())
}

/// Whether provider libraries that fail [`check_path`] are loaded anyway (with a warning):
/// `stmfd --allow-insecure-providers`. Process-wide; off unless set.
static ALLOW_INSECURE_PROVIDERS: AtomicBool = AtomicBool::new(false);

/// The flag that loads untrusted provider libraries anyway, as named in error messages.
pub const INSECURE_PROVIDERS_FLAG: &str = "--allow-insecure-providers";

/// Sets whether untrusted provider libraries are loaded anyway (process-wide).
pub fn set_allow_insecure_providers(allow: bool) {
    ALLOW_INSECURE_PROVIDERS.store(allow, Ordering::SeqCst);
}

/// Whether untrusted provider libraries are loaded anyway.
pub fn allow_insecure_providers() -> bool {
    ALLOW_INSECURE_PROVIDERS.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DIR: u32 = S_IFDIR;
    const REG: u32 = S_IFREG;
    const LNK: u32 = S_IFLNK;

    fn ok(uid: u32, mode: u32, role: Role) -> bool {
        check_facts(Facts { uid, mode }, role, 1000).is_ok()
    }

    #[test]
    fn ancestors_owned_by_root_or_us_and_not_writable_unless_sticky() {
        assert!(ok(0, DIR | 0o755, Role::Ancestor));
        assert!(ok(1000, DIR | 0o700, Role::Ancestor));
        assert!(!ok(65534, DIR | 0o755, Role::Ancestor));
        assert!(!ok(0, DIR | 0o775, Role::Ancestor));
        assert!(!ok(0, DIR | 0o777, Role::Ancestor));
        assert!(ok(0, DIR | 0o1777, Role::Ancestor), "sticky, as /tmp");
        assert!(
            !ok(65534, DIR | 0o1777, Role::Ancestor),
            "sticky but foreign"
        );
        assert!(!ok(0, REG | 0o644, Role::Ancestor));
    }

    #[test]
    fn private_dir_is_ours_and_writable_by_nobody_else() {
        let r = Role::Final(Rule::PrivateDir);
        assert!(ok(1000, DIR | 0o700, r));
        assert!(ok(1000, DIR | 0o755, r), "readable is not writable");
        assert!(!ok(0, DIR | 0o700, r), "root's, but stmfd runs as 1000");
        assert!(!ok(1000, DIR | 0o770, r));
        assert!(
            !ok(1000, DIR | 0o1777, r),
            "sticky does not help the final dir"
        );
        assert!(!ok(1000, REG | 0o600, r));
    }

    #[test]
    fn trusted_file_is_regular_root_or_ours_and_not_writable() {
        let r = Role::Final(Rule::TrustedFile);
        assert!(ok(0, REG | 0o755, r));
        assert!(ok(1000, REG | 0o644, r));
        assert!(!ok(65534, REG | 0o755, r));
        assert!(!ok(0, REG | 0o666, r));
        assert!(!ok(0, REG | 0o775, r));
        assert!(!ok(0, DIR | 0o755, r));
        assert!(ok(0, LNK | 0o777, Role::Link));
        assert!(!ok(65534, LNK | 0o777, Role::Link));
    }

    #[test]
    fn messages_name_the_problem_and_the_fix() {
        let u = Untrusted {
            path: "/x/lib.so".into(),
            problem: Problem::Writable { mode: REG | 0o666 },
            is_final: true,
            rule: Some(Rule::TrustedFile),
            euid: 0,
        };
        assert_eq!(
            u.to_string(),
            "/x/lib.so is writable by group and others (mode 0666)"
        );
        assert_eq!(u.fix(), "chmod go-w /x/lib.so");
        let u = Untrusted {
            path: "/s".into(),
            problem: Problem::Writable { mode: DIR | 0o702 },
            is_final: true,
            rule: Some(Rule::PrivateDir),
            euid: 0,
        };
        assert_eq!(u.to_string(), "/s is writable by others (mode 0702)");
        assert_eq!(u.fix(), "chmod 0700 /s");
        let u = Untrusted {
            path: "/s".into(),
            problem: Problem::Owner {
                uid: 65534,
                root_ok: false,
            },
            is_final: true,
            rule: Some(Rule::PrivateDir),
            euid: 0,
        };
        assert_eq!(
            u.to_string(),
            "/s is owned by uid 65534, not by uid 0 that runs stmfd"
        );
        assert_eq!(u.fix(), "chown 0 /s");
        let u = Untrusted {
            path: "/p".into(),
            problem: Problem::Owner {
                uid: 7,
                root_ok: true,
            },
            is_final: false,
            rule: None,
            euid: 1000,
        };
        assert_eq!(
            u.to_string(),
            "/p is owned by uid 7, not by root or uid 1000 (stmfd's user)"
        );
        assert_eq!(u.fix(), "chown root /p");
    }

    #[test]
    fn walk_checks_directories_and_links_on_the_way() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let lib = base.join("lib.so");
        fs::write(&lib, b"x").unwrap();
        fs::set_permissions(&lib, fs::Permissions::from_mode(0o755)).unwrap();
        check_path(&lib, Rule::TrustedFile).unwrap();

        // Through a link to an open directory: the directory the link points into is at fault.
        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        fs::copy(&lib, open.join("lib.so")).unwrap();
        std::os::unix::fs::symlink(&open, base.join("link")).unwrap();
        let e = check_path(&base.join("link/lib.so"), Rule::TrustedFile).unwrap_err();
        assert_eq!(e.path, open);
        assert!(!e.is_final);
        assert!(matches!(e.problem, Problem::Writable { .. }), "{e}");

        // A link as the final component: its target is checked as the final object.
        fs::set_permissions(&lib, fs::Permissions::from_mode(0o666)).unwrap();
        std::os::unix::fs::symlink("lib.so", base.join("alias.so")).unwrap();
        let e = check_path(&base.join("alias.so"), Rule::TrustedFile).unwrap_err();
        assert_eq!(e.path, lib);
        assert!(e.is_final);

        // A loop is an error, not a hang.
        std::os::unix::fs::symlink("loop2", base.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", base.join("loop2")).unwrap();
        let e = check_path(&base.join("loop1"), Rule::TrustedFile).unwrap_err();
        assert!(matches!(e.problem, Problem::TooManyLinks), "{e}");

        let e = check_path(&base.join("missing"), Rule::PrivateDir).unwrap_err();
        assert!(matches!(e.problem, Problem::Io(_)), "{e}");
    }
}
