//! Starting a program with a pid of our choosing: `clone3` with `set_tid` (Linux 5.5+,
//! CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), as CRIU restores processes. The soak uses
//! it to start a new process under the pid a finished one just had, which a wrapping pid
//! space does by chance, without lowering `kernel.pid_max` on a shared machine.
use std::{
    ffi::{CString, OsStr},
    fs::File,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use anyhow::{Context as _, bail};

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// A child started by [`spawn`]: reap it with [`Spawned::wait`].
pub struct Spawned {
    pub pid: u32,
    /// Its stdout.
    pub stdout: File,
}

/// Why a wanted pid could not be had.
#[derive(Debug)]
pub enum PidRefused {
    /// Someone else holds it now.
    Taken,
    /// The kernel refused `set_tid` (old kernel, no capability): no use trying again.
    Unsupported(std::io::Error),
}

fn cstring(s: &OsStr) -> anyhow::Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte"))
}

/// Starts `program args...` with stdout piped, stdin from /dev/null, stderr inherited,
/// under pid `want` if given (`Err(Ok(PidRefused))` when that pid cannot be had; the
/// caller may start it without one).
pub fn spawn(
    program: &Path,
    args: &[String],
    want: Option<u32>,
) -> anyhow::Result<Result<Spawned, PidRefused>> {
    // Everything the child needs is made before the clone: between clone and exec it
    // may only make async-signal-safe calls (no allocation: another thread of ours
    // may have held the allocator's lock when we cloned).
    let path = cstring(program.as_os_str())?;
    let mut argv_owned = vec![path.clone()];
    for a in args {
        argv_owned.push(cstring(OsStr::new(a))?);
    }
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env_owned: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let devnull: OwnedFd = File::open("/dev/null")
        .context("cannot open /dev/null")?
        .into();
    let mut fds = [-1i32; 2];
    // SAFETY: pipe2 fills the two fds it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a pipe");
    }
    // SAFETY: both fds were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    use std::os::fd::AsRawFd as _;
    let (w, null) = (write_end.as_raw_fd(), devnull.as_raw_fd());

    let tid: i32 = match want {
        Some(p) => i32::try_from(p).context("pid out of range")?,
        None => 0,
    };
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if want.is_some() {
        args.set_tid = std::ptr::from_ref(&tid) as u64;
        args.set_tid_size = 1;
    }
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this
    // address space and runs only the async-signal-safe calls below before exec.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_mut(&mut args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // The child.
        // SAFETY: async-signal-safe calls on fds and pointers prepared above; exec
        // replaces this image, _exit ends it if exec fails.
        unsafe {
            libc::dup2(w, 1);
            libc::dup2(null, 0);
            // Rust ignores SIGPIPE; an ignored signal stays ignored across exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        if want.is_some() {
            return Ok(Err(match e.raw_os_error() {
                Some(libc::EEXIST) => PidRefused::Taken,
                _ => PidRefused::Unsupported(e),
            }));
        }
        bail!("cannot start {}: {e}", program.display());
    }
    drop(write_end);
    let pid = u32::try_from(pid).context("clone3 returned an impossible pid")?;
    Ok(Ok(Spawned {
        pid,
        stdout: File::from(read_end),
    }))
}

/// The exit status of a child we started, `None` when it was killed by a signal.
pub fn wait(pid: u32) -> anyhow::Result<Option<i32>> {
    let mut status = 0;
    let pid = i32::try_from(pid).context("pid out of range")?;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e).with_context(|| format!("cannot wait for pid {pid}"));
        }
    }
    Ok(libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)))
}
