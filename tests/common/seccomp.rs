//! Starting a process the way a container with Docker's default seccomp profile would:
//! io_uring_setup refused with EPERM, everything else allowed.

use std::process::Command;

/// Installs, in the child only, a seccomp filter that makes io_uring_setup fail with EPERM.
/// False where this harness does not know the architecture's syscall numbers (the caller
/// skips its test there).
pub fn deny_io_uring(cmd: &mut Command) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::os::unix::process::CommandExt;
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const RET_ALLOW: u32 = 0x7fff_0000;
        const RET_ERRNO: u32 = 0x0005_0000;
        let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        // seccomp_data: nr at offset 0, arch at offset 4.
        let filter = [
            ins(LD_W_ABS, 0, 0, 4),
            ins(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
            ins(LD_W_ABS, 0, 0, 0),
            ins(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
            ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
            ins(RET_K, 0, 0, RET_ALLOW),
        ];
        // SAFETY: between fork and exec this only makes two prctl calls on data owned by
        // the closure; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &prog as *const libc::sock_fprog,
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = cmd;
        false
    }
}
