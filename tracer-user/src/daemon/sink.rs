//! Where the daemon's findings go: JSON Lines on stdout, or appended to a file that is
//! reopened on SIGHUP (logrotate's `postrotate`: move the file, then `kill -HUP`).
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::PathBuf,
};

pub struct Sink {
    path: Option<PathBuf>,
    file: Option<io::BufWriter<File>>,
}

impl Sink {
    /// Stdout when `path` is `None`; the file is created if missing, appended to if not.
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let file = path.as_ref().map(open_append).transpose()?;
        Ok(Self { path, file })
    }

    /// Closes the file and opens its path again (a new file after a rotation).
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(path) = &self.path {
            if let Some(mut old) = self.file.take() {
                old.flush()?;
            }
            self.file = Some(open_append(path)?);
        }
        Ok(())
    }

    /// One JSON value, one line, flushed: a reader tailing the file sees whole lines.
    pub fn line(&mut self, v: &serde_json::Value) -> io::Result<()> {
        match &mut self.file {
            Some(f) => {
                writeln!(f, "{v}")?;
                f.flush()
            }
            None => {
                let mut out = io::stdout().lock();
                writeln!(out, "{v}")?;
                out.flush()
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<io::BufWriter<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(io::BufWriter::new)
}
