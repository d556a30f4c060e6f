//! Property tests of the stapsdt parsers: arbitrary input never panics, mutated real
//! note sections give a result or an error (never a panic), and every spec the
//! x86_64 SDT grammar allows parses back to what it says.
use object::{Object as _, ObjectSection as _};
use proptest::prelude::*;
use tracer_user::stapsdt::{ArgKind, parse_arg, parse_args, read_notes_from_bytes};

/// A real binary with notes, and where its note section lies in the file (read once).
fn real_binary() -> &'static (Vec<u8>, std::ops::Range<usize>) {
    static BINARY: std::sync::OnceLock<(Vec<u8>, std::ops::Range<usize>)> =
        std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let path =
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_sockscope")).with_file_name("usdt_forms");
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (cargo build -p workloads)", path.display()));
        let file = object::File::parse(&*data).unwrap();
        let (start, len) = file
            .section_by_name(".note.stapsdt")
            .unwrap()
            .file_range()
            .unwrap();
        let range = start as usize..(start + len) as usize;
        (data, range)
    })
}

const REGS: [&str; 20] = [
    "rax", "eax", "ax", "al", "rdi", "edi", "di", "dil", "r8", "r8d", "r8w", "r8b", "r15", "r15d",
    "rsp", "esp", "rbp", "rip", "rsi", "sil",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_notes_from_bytes(&bytes);
    }

    #[test]
    fn arbitrary_arg_strings_never_panic(s in "\\PC{0,64}") {
        let _ = parse_args(&s);
    }

    #[test]
    fn spec_shaped_strings_never_panic(s in "-?[0-9]{1,3}@(\\$-?[0-9x]{0,22}|%[a-z0-9]{1,5}|-?[0-9]{0,12}\\(%[a-z0-9]{1,5}(,%[a-z0-9]{1,4},[0-9])?\\)?)") {
        let _ = parse_arg(&s);
    }

    #[test]
    fn well_formed_specs_round_trip(
        size in prop::sample::select(vec![1i32, 2, 4, 8]),
        signed in any::<bool>(),
        reg in prop::sample::select(REGS.to_vec()),
        disp in any::<i32>(),
        constant in any::<i64>(),
        form in 0u8..3,
    ) {
        let n = if signed { -size } else { size };
        let text = match form {
            0 => format!("{n}@${constant}"),
            1 => format!("{n}@%{reg}"),
            _ => format!("{n}@{disp}(%{reg})"),
        };
        let spec = parse_arg(&text).unwrap();
        prop_assert_eq!(spec.size as i32, size);
        prop_assert_eq!(spec.signed, signed);
        match (form, spec.kind) {
            (0, ArgKind::Const(v)) => prop_assert_eq!(v, constant),
            (1, ArgKind::Reg { .. }) => {}
            (2, ArgKind::Mem { disp: d, .. }) => prop_assert_eq!(d, disp as i64),
            (f, k) => prop_assert!(false, "form {} parsed as {:?}", f, k),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Up to 8 bytes of the real note section overwritten: parse or refuse, no panic.
    #[test]
    fn mutated_note_sections_never_panic(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let (original, notes) = real_binary();
        let mut data = original.clone();
        for (at, byte) in edits {
            let i = notes.start + at as usize % notes.len();
            data[i] = byte;
        }
        let _ = read_notes_from_bytes(&data);
    }
}
