use which::which;

/// Rebuild when `bpf-linker` changes: the BPF object depends on it but cargo cannot
/// see that dependency (same approach as aya-template).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
