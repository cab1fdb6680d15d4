//! Creating, attaching and validating arenas: every bad file is refused with a clear error.

use kernel_sim::kern::layout::Layout;
use kernel_sim::{Chid, Limits, Pid, SystemBuilder, SystemError};
use qsim_tests::{small_limits, Helper, TestSystem, PREFIX};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

/// Removes a test arena file on drop.
struct Remove(String);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.0);
    }
}

fn unique(tag: &str) -> (String, Remove) {
    let n = format!("{PREFIX}{tag}-{}", std::process::id());
    let _ = kernel_sim::remove_system(&n);
    (n.clone(), Remove(n))
}

#[test]
fn a_new_arena_is_private_to_its_user_and_sized_by_the_formula() {
    let ts = TestSystem::new("arena-mode", small_limits());
    let meta = std::fs::metadata(kernel_sim::system_path(&ts.name)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.len(), Layout::compute(small_limits()).total as u64);
    assert_eq!(ts.sys.limits(), small_limits());
}

#[test]
fn create_and_attach_are_distinct_and_open_does_either() {
    let (name, _r) = unique("arena-modes");
    assert!(matches!(
        SystemBuilder::new().name(&name).attach(),
        Err(SystemError::NotFound(_))
    ));
    let a = SystemBuilder::new()
        .name(&name)
        .limits(small_limits())
        .open()
        .unwrap();
    assert!(matches!(
        SystemBuilder::new().name(&name).create(),
        Err(SystemError::Exists(_))
    ));
    // Attaching accepts the system's limits; explicit different ones are an error.
    let b = SystemBuilder::new().name(&name).attach().unwrap();
    assert_eq!(b.limits(), small_limits());
    let other = Limits {
        max_coids: 64,
        ..small_limits()
    };
    match SystemBuilder::new().name(&name).limits(other).open() {
        Err(SystemError::LimitsMismatch {
            existing,
            requested,
            ..
        }) => {
            assert_eq!((existing, requested), (small_limits(), other));
        }
        r => panic!("expected LimitsMismatch, got {r:?}"),
    }
    // Both handles share one registration: a channel of one is this process's for the other.
    let chid = a.channel_create(0).unwrap();
    assert!(b.connect_attach(0, Pid(0), chid, 0, 0).is_ok());
    // Another process attaches too.
    let h = Helper::spawn(HELPER, &["attach", &name]);
    assert_eq!(h.line("attach"), "OK");
}

#[test]
fn bad_names_and_limits_are_refused() {
    for bad in ["", ".hidden", "a/b", "sp ace", &"x".repeat(201)] {
        assert!(
            matches!(
                SystemBuilder::new().name(bad).open(),
                Err(SystemError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    let (name, _r) = unique("arena-limits");
    let l = Limits {
        max_processes: 0,
        ..small_limits()
    };
    let e = SystemBuilder::new()
        .name(&name)
        .limits(l)
        .create()
        .unwrap_err();
    assert!(matches!(e, SystemError::InvalidLimits(_)));
    println!("{e}");
    assert!(
        !kernel_sim::system_path(&name).exists(),
        "nothing was created"
    );
}

#[test]
fn truncated_garbage_and_foreign_version_files_are_refused() {
    let (name, _r) = unique("arena-bad");
    let path = kernel_sim::system_path(&name);
    let quick = || {
        SystemBuilder::new()
            .name(&name)
            .init_wait(Duration::from_millis(20))
            .attach()
    };
    // Garbage.
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = quick().unwrap_err();
    println!("garbage: {e}");
    assert!(
        matches!(e, SystemError::BadMagic(_) | SystemError::NotReady(_)),
        "{e:?}"
    );
    // Too short to hold a header.
    std::fs::write(&path, [0u8; 10]).unwrap();
    let e = quick().unwrap_err();
    println!("short: {e}");
    assert!(matches!(e, SystemError::Truncated { .. }), "{e:?}");
    std::fs::remove_file(&path).unwrap();
    // A real arena from an incompatible build.
    drop(
        SystemBuilder::new()
            .name(&name)
            .limits(small_limits())
            .create()
            .unwrap(),
    );
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_at(&999u32.to_le_bytes(), 8).unwrap();
    let e = quick().unwrap_err();
    println!("version: {e}");
    assert!(
        matches!(e, SystemError::Version { found: 999, .. }),
        "{e:?}"
    );
    f.write_at(&kernel_sim::kern::layout::LAYOUT_VERSION.to_le_bytes(), 8)
        .unwrap();
    // Truncated: the header's limits need more than the file has.
    f.set_len(Layout::compute(small_limits()).total as u64 / 2)
        .unwrap();
    let e = quick().unwrap_err();
    println!("truncated: {e}");
    assert!(matches!(e, SystemError::Truncated { .. }), "{e:?}");
    // Corrupted limits.
    f.set_len(Layout::compute(small_limits()).total as u64)
        .unwrap();
    f.write_at(&0u32.to_le_bytes(), 24).unwrap();
    let e = quick().unwrap_err();
    println!("limits: {e}");
    assert!(matches!(e, SystemError::CorruptHeader { .. }), "{e:?}");
}

#[test]
fn an_arena_readable_by_others_is_refused() {
    let (name, _r) = unique("arena-perm");
    drop(
        SystemBuilder::new()
            .name(&name)
            .limits(small_limits())
            .create()
            .unwrap(),
    );
    let path = kernel_sim::system_path(&name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = SystemBuilder::new().name(&name).attach().unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, SystemError::NotOwner { mode: 0o644, .. }),
        "{e:?}"
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn an_arena_owned_by_another_user_is_refused() {
    if !running_as_root() {
        println!("skipped: creating an arena as another user needs root (Command::uid)");
        return;
    }
    use std::os::unix::process::CommandExt;
    let (name, _r) = unique("arena-owner");
    // The helper must be executable by uid 65534: copy it to a world-readable directory.
    let dir = std::env::temp_dir().join(format!("qsim-owner-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Removed on drop, even when the test fails.
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("kt-helper");
    std::fs::copy(HELPER, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test thread forking while our copy's fd was open for writing makes exec fail with
    // ETXTBSY until that child execs: the known race of copying a binary and running it at once
    // in a multi-threaded process. Wait for the child to let go.
    let mut tries = 0;
    let h = loop {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["create", &name]).uid(65534).gid(65534);
        match Helper::try_spawn_cmd(&mut cmd) {
            Ok(h) => break h,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("spawn the helper as uid 65534: {e}"),
        }
    };
    let said = h.line("create");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(said, "OK", "the other user could create its arena");
    let meta = std::fs::metadata(kernel_sim::system_path(&name)).unwrap();
    assert_eq!(meta.uid(), 65534);
    let e = SystemBuilder::new().name(&name).attach().unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, SystemError::NotOwner { owner: 65534, .. }),
        "{e:?}"
    );
}

#[test]
fn an_arena_unlinked_while_mapped_is_reported_and_reopening_gives_a_fresh_one() {
    let (name, _r) = unique("arena-unlinked");
    let a = SystemBuilder::new()
        .name(&name)
        .limits(small_limits())
        .create()
        .unwrap();
    let chid = a.channel_create(0).unwrap();
    assert!(!a.is_unlinked());
    kernel_sim::remove_system(&name).unwrap();
    assert!(a.is_unlinked());
    // The old handle still works on its copy...
    assert!(a.connect_attach(0, Pid(0), chid, 0, 0).is_ok());
    // ...but opening the name again does not share it: it makes a new system.
    let b = SystemBuilder::new()
        .name(&name)
        .limits(small_limits())
        .open()
        .unwrap();
    assert!(!b.is_unlinked());
    assert_eq!(
        b.connect_attach(0, Pid(0), Chid(1), 0, 0),
        Err(kernel_sim::Errno::SRCH)
    );
}
