//! bpf-linker is a tool dependency cargo does not know about: rebuild when it
//! changes.
//!
//! The programs read packet headers at offsets the compiler cannot prove
//! aligned. By default LLVM's BPF backend then reads them a byte at a time,
//! and the bytes of a 4- or 16-byte field each take a register (and, under
//! pressure, an 8-byte stack slot: the 512-byte stack overflows). With
//! misaligned access allowed it reads whole words; the kernel accepts
//! misaligned packet access on the architectures a hypervisor runs
//! (x86_64, arm64: CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
}
