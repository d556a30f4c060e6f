use which::which;

/// Rebuild when `bpf-linker` changes: the BPF object depends on it but cargo cannot
/// see that dependency (same approach as aya-template).
fn main() {
    bpf_target_arch();
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}

/// `--cfg bpf_target_arch="..."` (the architecture whose `struct pt_regs` the programs
/// read, see stack_sample.rs): as cargo passed it, else the host's.
fn bpf_target_arch() {
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if std::env::var_os("CARGO_CFG_BPF_TARGET_ARCH").is_some() {
        return;
    }
    let host = std::env::var("HOST").unwrap_or_default();
    let arch = host.split('-').next().unwrap_or("x86_64");
    println!("cargo:rustc-cfg=bpf_target_arch=\"{arch}\"");
}
