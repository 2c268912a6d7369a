//! Reading the fuzzer's bytes: as text lines and `name: value` headers, or as a stream of
//! numbers and strings for the targets that build values to encode.

/// The input's lines (split on `\n`), as bytes.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}

/// `name: value` lines, in order; a line without a colon or not UTF-8 is no header. The
/// value keeps its bytes but one space after the colon, so whitespace reaches the parser.
pub struct Headers<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Headers<'a> {
    pub fn parse<'d: 'a>(lines: impl Iterator<Item = &'d [u8]>) -> Self {
        Self(
            lines
                .filter_map(|line| std::str::from_utf8(line).ok())
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim(), value.strip_prefix(' ').unwrap_or(value)))
                .collect(),
        )
    }

    /// The first value of `name`, as a header map's `get` finds it.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// The bytes as a stream of values; once exhausted, every read gives zeros and empty strings,
/// so any input builds a value.
pub struct Stream<'a>(&'a [u8]);

impl<'a> Stream<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }

    pub fn u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        let taken = self.take(4);
        bytes[..taken.len()].copy_from_slice(taken);
        u32::from_le_bytes(bytes)
    }

    /// A string of up to 255 bytes (its length comes first), lossily UTF-8.
    pub fn string(&mut self) -> String {
        let len = usize::from(self.u8());
        String::from_utf8_lossy(self.take(len)).into_owned()
    }
}
