//! Tracepoint record layouts, read from tracefs `format` files, so programs that read
//! a field at a fixed offset are attached only where the kernel agrees.
use std::fs;

use super::mounts::ensure_tracefs;

/// Byte offset of `field` in the record of tracepoint `category/name`, or `None`
/// if the tracepoint or the field does not exist here.
pub fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Option<usize> {
    let root = ensure_tracefs().ok()?;
    let text = fs::read_to_string(
        root.path()
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()?;
    parse_offset(&text, field)
}

/// From a line like `field:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;`.
fn parse_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.split_whitespace().last()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_field_offsets() {
        let format = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(parse_offset(format, "group_dead"), Some(32));
        assert_eq!(parse_offset(format, "comm[16]"), Some(8));
        assert_eq!(parse_offset(format, "missing"), None);
    }
}
