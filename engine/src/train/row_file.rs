//! Prepared training rows kept in a scratch file, not in memory: a table's token ids take about as much room as
//! its text, so a table larger than memory must not be held. The file is unlinked as soon as it is created, so
//! nothing is left behind however the process ends; the OS page cache keeps what fits in memory.

use crate::error::{AiError, Result};
use crate::train::data::Row;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// No label (a row's label is a u32 id otherwise).
const NONE: u32 = u32::MAX;

fn io_error(e: std::io::Error) -> AiError {
    AiError::internal(format!("cannot use the training rows' scratch file: {e}"))
}

/// Appends rows as little-endian u32 words: the ids' count and ids, the label, the tags' count and
/// (position, tag) pairs, the target's count and ids.
pub struct RowWriter {
    out: BufWriter<File>,
    words: u64,
}

/// Where a row lies in the file, in words.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    start: u64,
    words: u32,
}

impl RowWriter {
    /// A new, already unlinked file in `dir`.
    pub fn create(dir: &Path) -> Result<RowWriter> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = dir.join(format!(".pg_ai_rows.{}.{nanos}", std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_error)?;
        std::fs::remove_file(&path).map_err(io_error)?;
        Ok(RowWriter { out: BufWriter::new(file), words: 0 })
    }

    pub fn write(&mut self, row: &Row) -> Result<Span> {
        let start = self.words;
        let mut put = |w: u32| -> Result<()> {
            self.words += 1;
            self.out.write_all(&w.to_le_bytes()).map_err(io_error)
        };
        let count = |n: usize| u32::try_from(n).map_err(|_| AiError::internal("a training row is too long"));
        put(count(row.ids.len())?)?;
        row.ids.iter().try_for_each(|&id| put(id))?;
        put(row.label.unwrap_or(NONE))?;
        put(count(row.tags.len())?)?;
        row.tags.iter().try_for_each(|&(at, tag)| put(at).and_then(|_| put(tag)))?;
        put(count(row.target.len())?)?;
        row.target.iter().try_for_each(|&id| put(id))?;
        Ok(Span { start, words: (self.words - start) as u32 })
    }

    pub fn finish(self) -> Result<Arc<File>> {
        Ok(Arc::new(self.out.into_inner().map_err(|e| io_error(e.into_error()))?))
    }
}

/// A set of rows in the file (the training or the held-out ones), read back one by one; label and tag ids
/// are mapped through `ids` (the ids given while writing, in order of first appearance, to the sorted ones).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    file: Option<Arc<File>>,
    spans: Vec<Span>,
    ids: Arc<Vec<u32>>,
}

impl Rows {
    pub fn new(file: Arc<File>, spans: Vec<Span>, ids: Arc<Vec<u32>>) -> Rows {
        Rows { file: Some(file), spans, ids }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> Result<Row> {
        let (span, file) = match (self.spans.get(i), &self.file) {
            (Some(span), Some(file)) => (span, file),
            _ => return Err(AiError::internal(format!("no training row {i}"))),
        };
        let mut bytes = vec![0u8; span.words as usize * 4];
        file.read_exact_at(&mut bytes, span.start * 4).map_err(io_error)?;
        let words: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let mut rest = words.as_slice();
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            head.to_vec()
        };
        let ids = {
            let n = take(1)[0] as usize;
            take(n)
        };
        let label = Some(take(1)[0]).filter(|l| *l != NONE).map(|l| self.ids[l as usize]);
        let pairs = take(1)[0] as usize;
        let tags = take(2 * pairs).chunks_exact(2).map(|p| (p[0], self.ids[p[1] as usize])).collect();
        let target = {
            let n = take(1)[0] as usize;
            take(n)
        };
        Ok(Row { ids, label, tags, target })
    }

    /// The rows `range` of the set, in order.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<Vec<Row>> {
        range.map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written_and_leave_no_file() {
        let dir = std::env::temp_dir().join(format!("pg_ai_row_file_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = [
            Row { ids: vec![2, 7, 3], label: Some(1), tags: vec![], target: vec![] },
            Row { ids: vec![], label: None, tags: vec![(1, 0), (4, 1)], target: vec![9, 1] },
        ];
        let mut writer = RowWriter::create(&dir).unwrap();
        let spans: Vec<Span> = rows.iter().map(|r| writer.write(r).unwrap()).collect();
        let file = writer.finish().unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the scratch file is unlinked at once");
        // Ids given while writing map to the sorted ones: 0 -> 1, 1 -> 0.
        let set = Rows::new(file, spans.into_iter().rev().collect(), Arc::new(vec![1, 0]));
        assert_eq!(set.len(), 2);
        let back = set.slice(0..2).unwrap();
        assert_eq!((back[0].ids.clone(), back[0].label, back[0].tags.clone()), (vec![], None, vec![(1, 1), (4, 0)]));
        assert_eq!(back[0].target, vec![9, 1]);
        assert_eq!((back[1].ids.clone(), back[1].label), (vec![2, 7, 3], Some(0)));
        assert!(set.get(2).is_err());
        std::fs::remove_dir(dir).unwrap();
    }
}
