//! `sockscope usdt list BINARY | --pid P`: the USDT probes an object offers, like
//! `bpftrace -l 'usdt:...'` or `tplist`.
use std::{io::Write as _, path::PathBuf};

use anyhow::bail;

use crate::{
    markers::process_objects,
    stapsdt::{ArgKind, ArgSpec, UsdtError, read_notes},
};

fn describe(a: &ArgSpec) -> String {
    let ty = format!("{}{}", if a.signed { "i" } else { "u" }, a.size as u32 * 8);
    match &a.kind {
        ArgKind::Const(v) => format!("{ty} = {v}"),
        ArgKind::Reg { reg } => format!("{ty} in %{}", reg.name),
        ArgKind::Mem { base, disp } => format!("{ty} at {disp}(%{})", base.name),
    }
}

/// Lists the probes of a binary, or of every object a process has mapped.
pub fn list(binary: Option<PathBuf>, pid: Option<u32>) -> anyhow::Result<()> {
    let objects = match (binary, pid) {
        (Some(b), _) => vec![(b.clone(), b)],
        (None, Some(p)) => process_objects(p)?,
        (None, None) => bail!("give a BINARY or --pid"),
    };
    let single = objects.len() == 1;
    let mut out = std::io::stdout().lock();
    let mut total = 0;
    for (shown, readable) in &objects {
        let probes = match read_notes(readable) {
            Ok(p) => p,
            Err(UsdtError::NotElf { .. }) if !single => continue,
            Err(e) => return Err(e.into()),
        };
        for p in &probes {
            total += 1;
            let sema = if p.semaphore == 0 {
                String::new()
            } else {
                format!(" semaphore={:#x}", p.semaphore)
            };
            writeln!(
                out,
                "{} {}:{} addr={:#x} offset={:#x}{sema} args=\"{}\"",
                shown.display(),
                p.provider,
                p.name,
                p.address,
                p.file_offset,
                p.arg_string
            )?;
            for (i, a) in p.args.iter().enumerate() {
                writeln!(out, "    arg{i}: {}", describe(a))?;
            }
        }
    }
    if total == 0 {
        let what = match (single, objects.first()) {
            (true, Some((p, _))) => p.display().to_string(),
            _ => format!("process {}", pid.unwrap_or(0)),
        };
        bail!("no USDT markers in {what}");
    }
    Ok(())
}
