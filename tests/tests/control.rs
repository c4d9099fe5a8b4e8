//! Who may use the control socket (`lb_userspace::daemon::control`), as root, without a daemon: the
//! test serves the socket itself, as the daemon does (bind, then `Bound::read_request` per
//! connection), and runs the real `drlb` client as other users with `setpriv`.
//!
//! - the socket never has mode bits for others: 0660, group = the control group;
//! - root may change things;
//! - a member of the control group may read (`drlb stats`) but not change anything;
//! - anyone else is refused: by the file mode, and by the peer's credentials (SO_PEERCRED)
//!   where the file mode would let it in.
//!
//! Needs root: run with `cargo xtask test`.

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lb_userspace::{
    daemon::control::{self, Request, Response},
    report::stats::StatsReport,
};
use tests::{
    netns::{Ran, Scratch, run_bounded},
    require_root,
};

/// An unprivileged user and group every Debian system has.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// The control group of the test: exists on every Debian system, and `nobody` is no member.
const CONTROL_GROUP: &str = "users";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A change request, as `drlb backend add` sends it.
const CHANGE: [&str; 6] = [
    "backend",
    "add",
    "--service",
    "tcp/198.18.0.100:8080",
    "--address",
    "198.18.0.14",
];

/// `drlb ARGS... --state-dir STATE`, as root or, with `setpriv_args`, as another user.
fn drlb_as(setpriv_args: &[String], state: &Path, args: &[&str]) -> Ran {
    let mut cmd = if setpriv_args.is_empty() {
        Command::new(tests::drlb_binary())
    } else {
        let mut cmd = Command::new("setpriv");
        cmd.args(setpriv_args).arg("--").arg(tests::drlb_binary());
        cmd
    };
    cmd.args(args).arg("--state-dir").arg(state);
    run_bounded(&mut cmd, CLIENT_TIMEOUT)
}

/// `setpriv` arguments for uid/gid with exactly these supplementary groups.
fn user(uid: u32, gid: u32, groups: &[u32]) -> Vec<String> {
    let mut args = vec![format!("--reuid={uid}"), format!("--regid={gid}")];
    if groups.is_empty() {
        args.push("--clear-groups".to_owned());
    } else {
        let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
        args.push(format!("--groups={}", groups.join(",")));
    }
    args
}

fn empty_stats() -> StatsReport {
    StatsReport {
        interfaces: Vec::new(),
        services: Vec::new(),
        verdicts: BTreeMap::new(),
        state: "active".to_owned(),
        vips: Vec::new(),
        arp_conflicts: Vec::new(),
        flow_table: None,
        events: BTreeMap::new(),
        answers_arp: true,
    }
}

/// Serves requests as the daemon does, counting the changes it applied.
async fn serve(bound: control::Bound, changes: Arc<AtomicUsize>) {
    loop {
        let Ok((mut stream, _)) = bound.listener.accept().await else {
            continue;
        };
        let response = match bound.read_request(&mut stream).await {
            Ok(Request::Stats) => Response::Stats(empty_stats()),
            Ok(_) => {
                changes.fetch_add(1, Ordering::SeqCst);
                Response::Applied(vec!["changed".to_owned()])
            }
            Err(e) => Response::Error(format!("{e:#}")),
        };
        let _ = control::write_response(&mut stream, &response).await;
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn root_changes_the_control_group_reads_and_everyone_else_is_refused() {
    require_root();
    let scratch = Scratch::create();
    let state = scratch.subdir("state", 0o755);
    let group = lb_userspace::accounts::group_id(CONTROL_GROUP).unwrap_or_else(|e| {
        panic!("this test needs the group {CONTROL_GROUP} (Debian has it): {e:#}")
    });
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // The process umask must not matter: bind makes its own.
    // SAFETY: umask has no preconditions.
    let umask = unsafe { libc::umask(0) };
    let bound = runtime
        .block_on(control::bind(&state, Some(CONTROL_GROUP)))
        .expect("binding the control socket");
    // SAFETY: as above.
    unsafe { libc::umask(umask) };

    // Right after bind, before the socket is published under its name.
    let entries: Vec<_> = std::fs::read_dir(&state)
        .expect("the state directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    let [socket] = entries.as_slice() else {
        panic!("bind should have created one socket: {entries:?}");
    };
    let meta = std::fs::metadata(socket).expect("the socket's metadata");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "{} right after bind",
        socket.display()
    );
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, group),
        "owned by root and the control group"
    );
    bound.publish().expect("publishing the socket");
    let meta = std::fs::metadata(control::socket_path(&state)).expect("the published socket");
    assert_eq!(meta.permissions().mode() & 0o007, 0, "no bits for others");

    let changes = Arc::new(AtomicUsize::new(0));
    runtime.spawn(serve(bound, Arc::clone(&changes)));

    // Root: everything.
    let ran = drlb_as(&[], &state, &CHANGE);
    assert!(
        ran.success() && ran.stdout.contains("changed"),
        "root's change: {}",
        ran.describe()
    );
    assert_eq!(
        changes.load(Ordering::SeqCst),
        1,
        "root's change was served"
    );

    // A member of the control group (its primary group): reads, never changes.
    let member = user(NOBODY, group, &[]);
    let ran = drlb_as(&member, &state, &["stats"]);
    assert!(
        ran.success() && ran.stdout.contains("active"),
        "the control group may read: {}",
        ran.describe()
    );
    let ran = drlb_as(&member, &state, &CHANGE);
    assert!(
        !ran.success() && ran.stderr.contains("permission denied"),
        "a member's change must be refused: {}",
        ran.describe()
    );
    assert_eq!(
        changes.load(Ordering::SeqCst),
        1,
        "the member's change was applied"
    );

    // Neither root nor in the group: the file mode keeps it out.
    let stranger = user(NOBODY, NOGROUP, &[]);
    for args in [&["stats"][..], &CHANGE[..]] {
        let ran = drlb_as(&stranger, &state, args);
        assert!(
            !ran.success(),
            "a stranger ran {args:?}: {}",
            ran.describe()
        );
    }
    // A process that holds the group's id without being a member in the user database
    // passes the file mode; its credentials do not.
    let holder = user(NOBODY, NOGROUP, &[group]);
    for args in [&["stats"][..], &CHANGE[..]] {
        let ran = drlb_as(&holder, &state, args);
        assert!(
            !ran.success() && ran.stderr.contains("permission denied"),
            "{args:?} by uid {NOBODY} with supplementary group {group} only: {}",
            ran.describe()
        );
    }
    assert_eq!(changes.load(Ordering::SeqCst), 1, "nothing else changed");
}
