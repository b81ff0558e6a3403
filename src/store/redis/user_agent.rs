//! A lossless compact form of `User-Agent` strings, for the session record as Redis keeps it.
//!
//! A browser's `User-Agent` is the biggest part of a session record (100 to 130 bytes), and
//! almost all of it is the same few phrases. [`compact`] writes each phrase of a fixed table as
//! one private-use char: entry `i` becomes U+E000+`i`, three bytes in UTF-8, which JSON carries
//! as they are (no `\u` escape). A char of the original that is itself in U+E000..=U+E0FF is
//! written after the escape char U+E0FF, so every string comes back exactly as it was from
//! [`expand`]. A Chrome `User-Agent` of 111 bytes is stored in 9.
//!
//! [`TABLE`] is part of the stored format: an entry's place is what Redis holds. Entries may be
//! appended (up to 254), never changed, removed or reordered; `table_prefix_is_pinned` guards
//! the entries that exist today.

use std::borrow::Cow;

/// The phrases [`compact`] replaces. Its order is the stored format: append only.
///
/// Only an entry of 4 bytes or more saves anything (its marker takes 3). Whole prefixes of the
/// most common browsers come first, then the pieces that other strings share; at each place
/// [`compact`] takes the longest entry that matches, so the pieces still serve the strings the
/// long entries miss.
const TABLE: &[&str] = &[
    // Whole prefixes, up to the browser's version.
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:",
    "Mozilla/5.0 (X11; Linux x86_64; rv:",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:",
    "Mozilla/5.0 (iPhone; CPU iPhone OS ",
    "Mozilla/5.0 (iPad; CPU OS ",
    "Mozilla/5.0 (Linux; Android ",
    "Mozilla/5.0 (Android ",
    "Mozilla/5.0 (X11; CrOS x86_64 ",
    "Mozilla/5.0 (Windows NT 10.0; WOW64) ",
    "Mozilla/5.0 (compatible; ",
    "Mozilla/5.0 (Macintosh; ",
    "Mozilla/5.0 (Windows NT ",
    "Mozilla/5.0 (X11; ",
    "Mozilla/5.0 (",
    "Mozilla/5.0",
    // iOS: everything between the OS version and the browser's.
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/",
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/",
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/",
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) EdgiOS/",
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    " like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ",
    " like Mac OS X) ",
    " like Mac OS X",
    " Mobile/15E148 Safari/604.1",
    " Mobile/15E148 Safari/605.1.15",
    " Mobile/15E148 ",
    " Mobile/15E148",
    "Mobile/15E148 ",
    // Chromium: the rest after a model name, and the frozen minor version with what follows.
    ") AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    ") AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/",
    ") AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/",
    ") AppleWebKit/537.36 (KHTML, like Gecko) ",
    ") AppleWebKit/605.1.15 (KHTML, like Gecko) ",
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    "AppleWebKit/537.36 (KHTML, like Gecko) ",
    "AppleWebKit/605.1.15 (KHTML, like Gecko) ",
    "AppleWebKit/537.36 (KHTML, like Gecko)",
    "AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "AppleWebKit/537.36",
    "AppleWebKit/605.1.15",
    "(KHTML, like Gecko)",
    ".0.0.0 Safari/537.36 Edg/",
    ".0.0.0 Safari/537.36 OPR/",
    ".0.0.0 Safari/537.36 Vivaldi/",
    ".0.0.0 Safari/537.36 YaBrowser/",
    ".0.0.0 Mobile Safari/537.36 EdgA/",
    ".0.0.0 Mobile Safari/537.36 OPR/",
    ".0.0.0 Mobile Safari/537.36",
    ".0.0.0 Safari/537.36",
    ".0.0.0 Mobile",
    ".0.0.0",
    " Mobile Safari/537.36",
    " Safari/537.36",
    " Safari/605.1.15",
    " Safari/604.1",
    "Mobile Safari/537.36",
    "Safari/537.36",
    "Safari/605.1.15",
    "Safari/604.1",
    " Edg/",
    " EdgA/",
    " OPR/",
    // Firefox.
    ".0) Gecko/20100101 Firefox/",
    ") Gecko/20100101 Firefox/",
    "Gecko/20100101 Firefox/",
    "Gecko/20100101",
    "; Mobile; rv:",
    "; Tablet; rv:",
    ".0) Gecko/",
    ".0 Firefox/",
    " Firefox/",
    "Firefox/",
    "Gecko/",
    "; rv:",
    // Operating systems and devices.
    "Windows NT 10.0; Win64; x64) ",
    "Windows NT 10.0; Win64; x64",
    "Windows NT 10.0; WOW64",
    "Windows NT 10.0",
    "Windows NT 6.1; Win64; x64",
    "Windows NT 6.1",
    "Windows NT ",
    "Windows",
    "; Win64; x64",
    "Win64; x64",
    "(Macintosh; Intel Mac OS X 10_15_7) ",
    "Macintosh; Intel Mac OS X 10_15_7",
    "Macintosh; Intel Mac OS X ",
    "Intel Mac OS X ",
    "Mac OS X",
    "X11; Linux x86_64) ",
    "X11; Ubuntu; Linux x86_64",
    "X11; Linux x86_64",
    "X11; Linux aarch64",
    "X11; CrOS ",
    "Linux x86_64",
    "Linux aarch64",
    "Linux; Android ",
    "Linux; U; Android ",
    "Android ",
    "; K) ",
    "; wv) ",
    " Build/",
    "; SAMSUNG SM-",
    "SAMSUNG ",
    "; SM-",
    "; Pixel ",
    "Pixel ",
    "; Redmi ",
    "; moto ",
    "iPhone; CPU iPhone OS ",
    "iPad; CPU OS ",
    "CPU iPhone OS ",
    "CPU OS ",
    "iPhone",
    "iPad",
    "Darwin/",
    "CFNetwork/",
    "Ubuntu",
    "Fedora",
    "Linux",
    "Mobile",
    "Tablet",
    "en-US",
    "en-GB",
    // Browsers and engines by name.
    "Version/4.0 Chrome/",
    "Version/",
    "Chrome/",
    "HeadlessChrome/",
    "Chromium/",
    "CriOS/",
    "FxiOS/",
    "EdgiOS/",
    "SamsungBrowser/",
    "YaBrowser/",
    "Vivaldi/",
    "Electron/",
    "Brave",
    "Safari",
    "Gecko",
    "Trident/7.0; rv:11.0) like Gecko",
    "like Gecko",
    "(compatible; ",
    "compatible; ",
    "Mozilla/",
    // Clients that are not browsers.
    "curl/",
    "Wget/",
    "okhttp/",
    "python-requests/",
    "python-httpx/",
    "Python-urllib/",
    "Python/",
    "aiohttp/",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "Go-http-client/",
    "axios/",
    "node-fetch",
    "undici",
    "PostmanRuntime/",
    "insomnia/",
    "Dart/",
    "Java/",
    "Apache-HttpClient/",
    "reqwest/",
    "Dalvik/2.1.0 (Linux; U; Android ",
    "Dalvik/",
    "(dart:io)",
    "(Java/",
];

/// Writes a char of the original that is in the markers' range: the char follows it.
const ESCAPE: char = '\u{E0FF}';

/// The number of entries; at most 254, so that no marker meets the escape.
const LEN: usize = TABLE.len();

/// `MARKERS[i]` is U+E000+`i`.
static MARKERS: [char; 256] = markers();

/// The entries by first byte, longest first: those of byte `b` are
/// `ORDER[START[b]..START[b + 1]]`.
static DISPATCH: Dispatch = dispatch();

/// The longest entry, in bytes.
const LONGEST: usize = longest();

/// How much [`expand`] reserves at most before it knows the result's length. Up to this, one
/// allocation serves every input; past it (only in strings the crate never writes), the result
/// grows as it needs.
const RESERVE_LIMIT: usize = 4096;

struct Dispatch {
    order: [u8; LEN],
    start: [u16; 257],
}

const _: () = assert!(LEN <= 254, "U+E0FE is kept free and U+E0FF is the escape");

const fn markers() -> [char; 256] {
    let mut markers = ['\0'; 256];
    let mut i = 0;
    while i < 256 {
        markers[i] = match char::from_u32(0xE000 + i as u32) {
            Some(marker) => marker,
            None => panic!("U+E000..=U+E0FF are chars"),
        };
        i += 1;
    }
    markers
}

/// Sorts the entries by (first byte, length descending) and checks what the scheme relies on:
/// no entry is empty, and none holds a marker or the escape.
const fn dispatch() -> Dispatch {
    let mut order = [0u8; LEN];
    let mut i = 0;
    while i < LEN {
        let entry = TABLE[i].as_bytes();
        assert!(!entry.is_empty(), "an empty entry");
        assert!(
            !holds_private(entry),
            "an entry holds a char of U+E000..=U+E0FF"
        );
        order[i] = i as u8;
        i += 1;
    }
    // Insertion sort: the table is small and this runs at compile time.
    let mut i = 1;
    while i < LEN {
        let mut j = i;
        while j > 0 && before(order[j], order[j - 1]) {
            let swap = order[j];
            order[j] = order[j - 1];
            order[j - 1] = swap;
            j -= 1;
        }
        i += 1;
    }
    let mut start = [0u16; 257];
    let mut i = 0;
    while i < LEN {
        start[TABLE[i].as_bytes()[0] as usize + 1] += 1;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        start[b + 1] += start[b];
        b += 1;
    }
    Dispatch { order, start }
}

/// Whether entry `a` sorts before entry `b`: by first byte, then longer first.
const fn before(a: u8, b: u8) -> bool {
    let a = TABLE[a as usize].as_bytes();
    let b = TABLE[b as usize].as_bytes();
    a[0] < b[0] || (a[0] == b[0] && a.len() > b.len())
}

/// Whether `bytes` holds a char of U+E000..=U+E0FF.
const fn holds_private(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if private_at(bytes, i).is_some() {
            return true;
        }
        i += 1;
    }
    false
}

const fn longest() -> usize {
    let mut longest = 0;
    let mut i = 0;
    while i < LEN {
        if TABLE[i].len() > longest {
            longest = TABLE[i].len();
        }
        i += 1;
    }
    longest
}

/// The offset `k` of the char U+E000+`k` that starts at `i`, if one does.
///
/// In UTF-8 U+E000+`k` is `EE`, `80 | k >> 6`, `80 | k & 3F`; `EE` only ever starts a char, so
/// a match is on a char boundary.
const fn private_at(bytes: &[u8], i: usize) -> Option<u8> {
    if i + 2 < bytes.len() && bytes[i] == 0xEE && bytes[i + 1] >= 0x80 && bytes[i + 1] <= 0x83 {
        Some(((bytes[i + 1] & 0x03) << 6) | (bytes[i + 2] & 0x3F))
    } else {
        None
    }
}

/// Where the next char of U+E000..=U+E0FF starts, from `from` on.
fn next_private(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let found = at + bytes.get(at..)?.iter().position(|&b| b == 0xEE)?;
        if private_at(bytes, found).is_some() {
            return Some(found);
        }
        at = found + 1;
    }
}

/// The longest entry that `rest` starts with.
fn longest_entry(rest: &[u8]) -> Option<usize> {
    let first = usize::from(*rest.first()?);
    let start = usize::from(DISPATCH.start[first]);
    let end = usize::from(DISPATCH.start[first + 1]);
    DISPATCH.order[start..end]
        .iter()
        .map(|&index| usize::from(index))
        .find(|&index| rest.starts_with(TABLE[index].as_bytes()))
}

/// The compact form of `ua`, for storing. Lossless: `expand(&compact(ua)) == ua` for every
/// string. Borrowed when there is nothing to replace or escape.
///
/// Greedy: at each place the longest entry that matches is replaced.
pub(super) fn compact(ua: &str) -> Cow<'_, str> {
    let bytes = ua.as_bytes();
    let mut out: Option<String> = None;
    // The start of the original's text not yet copied to `out`.
    let mut literal = 0;
    let mut i = 0;
    while i < bytes.len() {
        // An entry is a str, so its first byte never continues a char, and `i` is a char
        // boundary whenever an entry or a private-use char starts there.
        if let Some(index) = longest_entry(&bytes[i..]) {
            let out = out.get_or_insert_with(|| String::with_capacity(ua.len()));
            out.push_str(&ua[literal..i]);
            out.push(MARKERS[index]);
            i += TABLE[index].len();
            literal = i;
        } else if private_at(bytes, i).is_some() {
            let out = out.get_or_insert_with(|| String::with_capacity(ua.len() + 3));
            out.push_str(&ua[literal..i]);
            out.push(ESCAPE);
            // The char itself is copied with the text that follows it.
            literal = i;
            i += 3;
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(ua),
        Some(mut out) => {
            out.push_str(&ua[literal..]);
            Cow::Owned(out)
        }
    }
}

/// Back from the compact form. Any input is accepted without panicking (stored bytes may be
/// corrupted): a malformed escape at the end is kept as it is, never a panic.
///
/// Also kept as they are: a marker no entry has, and an escape before a char that needs none.
/// Borrowed when `stored` holds no char of U+E000..=U+E0FF, which is how every string without
/// an entry comes back. One pass, and one allocation for any result up to [`RESERVE_LIMIT`].
pub(super) fn expand(stored: &str) -> Cow<'_, str> {
    let bytes = stored.as_bytes();
    let Some(mut i) = next_private(bytes, 0) else {
        return Cow::Borrowed(stored);
    };
    // Each 3 bytes from the first marker on give at most the longest entry.
    let bound = i + (bytes.len() - i).div_ceil(3) * LONGEST;
    let mut out = String::with_capacity(bound.min(RESERVE_LIMIT.max(bytes.len())));
    let mut literal = 0;
    loop {
        out.push_str(&stored[literal..i]);
        match private_at(bytes, i) {
            Some(index) if usize::from(index) < LEN => {
                out.push_str(TABLE[usize::from(index)]);
                literal = i + 3;
                i += 3;
            }
            Some(0xFF) if private_at(bytes, i + 3).is_some() => {
                // The escaped char starts the next run of text.
                literal = i + 3;
                i += 6;
            }
            _ => {
                literal = i;
                i += 3;
            }
        }
        match next_private(bytes, i) {
            Some(next) => i = next,
            None => break,
        }
    }
    out.push_str(&stored[literal..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `User-Agent` strings of current browsers and common clients, and the most bytes
    /// each may take compacted.
    const REAL: &[(&str, usize)] = &[
        // Chrome on Windows, macOS, Linux, Android, iOS.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 9),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 9),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 9),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", 9),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", 26),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 21),
        // Edge on Windows, macOS, Android.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 15),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 15),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0", 15),
        // Firefox on Windows, macOS, Linux, Android, iOS.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0", 14),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:140.0) Gecko/20100101 Firefox/140.0", 14),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0", 14),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0", 14),
        ("Mozilla/5.0 (Android 15; Mobile; rv:140.0) Gecko/140.0 Firefox/140.0", 25),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/140.0 Mobile/15E148 Safari/605.1.15", 18),
        // Safari on macOS, iPhone, iPad.
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", 10),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1", 17),
        ("Mozilla/5.0 (iPad; CPU OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1", 17),
        // Others: Samsung Internet, an Android WebView, Opera.
        ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", 30),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36", 52),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0", 15),
        // Clients that are not browsers.
        ("curl/8.11.0", 9),
        ("okhttp/4.12.0", 9),
        ("python-requests/2.32.3", 9),
        ("Go-http-client/1.1", 3),
        ("Go-http-client/2.0", 3),
    ];

    #[test]
    fn real_user_agents_round_trip_small() {
        for &(ua, most) in REAL {
            let compacted = compact(ua);
            assert!(
                compacted.len() <= most,
                "{ua:?}: {} bytes, {most} expected at most",
                compacted.len()
            );
            assert_eq!(expand(&compacted), ua);
        }
    }

    #[test]
    fn chrome_on_windows_takes_9_bytes() {
        let ua = REAL[0].0;
        assert_eq!(ua.len(), 111);
        assert_eq!(compact(ua).len(), 9);
    }

    #[test]
    fn compacted_json_holds_no_unicode_escape() {
        for &(ua, _) in REAL {
            let json = serde_json::to_string(&compact(ua)).unwrap();
            assert!(!json.contains("\\u"), "{json}");
            let back: String = serde_json::from_str(&json).unwrap();
            assert_eq!(expand(&back), ua);
        }
    }

    #[test]
    fn strings_without_an_entry_stay_borrowed() {
        for ua in ["", "x", "my-client 1.0", "ünïcödé ✓ 😀", "Mozill"] {
            assert!(matches!(compact(ua), Cow::Borrowed(_)), "{ua:?}");
            assert!(matches!(expand(ua), Cow::Borrowed(_)), "{ua:?}");
        }
    }

    #[test]
    fn hostile_strings_round_trip() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "\u{E000}".to_owned(),
            "\u{E0FF}".to_owned(),
            "\u{E0FE}".to_owned(),
            "x\u{E0FF}".to_owned(),
            "\u{E0FF}\u{E0FF}".to_owned(),
            "\u{E0FF}\u{E000}".to_owned(),
            "\u{E0FF}a".to_owned(),
            "\u{D7FF}\u{E100}\u{E0FF}\u{E100}".to_owned(),
            "Mozilla/5.0 (\u{E000}Chrome/\u{E0FF}".to_owned(),
            "😀Mozilla/5.0 (日本語; ünï) Chrome/1\u{10FFFF}".to_owned(),
            "\0\t\r\n\"\\".to_owned(),
            (0xE000..=0xE0FF).filter_map(char::from_u32).collect(),
            TABLE.concat(),
            TABLE.join("\u{E0FF}"),
            TABLE.iter().rev().copied().collect(),
        ];
        cases.extend(TABLE.iter().map(|&entry| entry.to_owned()));
        cases.extend(
            TABLE
                .iter()
                .map(|&entry| format!("\u{E0FF}{entry}\u{E000}")),
        );
        for ua in &cases {
            assert_eq!(expand(&compact(ua)), ua.as_str(), "{ua:?}");
        }
        for &entry in TABLE {
            assert_eq!(compact(entry).chars().count(), 1, "{entry:?}");
        }
    }

    #[test]
    fn malformed_input_is_kept() {
        assert_eq!(expand("a\u{E0FF}"), "a\u{E0FF}");
        assert_eq!(expand("\u{E0FF}a"), "\u{E0FF}a");
        assert_eq!(expand("\u{E0FE}"), "\u{E0FE}");
        assert_eq!(expand("\u{E0FF}\u{E0FE}"), "\u{E0FE}");
        assert_eq!(expand("\u{E000}\u{E0FF}"), format!("{}\u{E0FF}", TABLE[0]));
    }

    /// A tiny deterministic generator; enough to spread the cases.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn char(&mut self) -> char {
            let code = match self.below(5) {
                0 => 0xE000 + self.below(0x100) as u32,
                1 => 0x20 + self.below(0x5F) as u32,
                2 => 0xDF00 + self.below(0x300) as u32,
                3 => self.below(0x11_0000) as u32,
                _ => [0xEE, 0x80, 0x83, 0x10FFFF, 0][self.below(5)],
            };
            char::from_u32(code).unwrap_or('\u{E0FF}')
        }

        fn string(&mut self) -> String {
            let mut s = String::new();
            for _ in 0..self.below(12) {
                match self.below(3) {
                    0 => s.push_str(TABLE[self.below(LEN)]),
                    1 => {
                        // Part of an entry, to break matches midway.
                        let entry = TABLE[self.below(LEN)];
                        let cut = self.below(entry.len() + 1);
                        s.push_str(&entry[..cut]);
                    }
                    _ => s.push(self.char()),
                }
            }
            s
        }
    }

    #[test]
    fn generated_strings_round_trip() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let ua = rng.string();
            let compacted = compact(&ua);
            assert!(compacted.len() <= 2 * ua.len(), "{ua:?}");
            assert_eq!(expand(&compacted), ua.as_str(), "{ua:?}");
        }
    }

    #[test]
    fn expand_accepts_garbage() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        for _ in 0..20_000 {
            let garbage: String = (0..rng.below(16)).map(|_| rng.char()).collect();
            let expanded = expand(&garbage);
            // Whatever it reads, it never loses the text around the markers.
            let plain: String = garbage
                .chars()
                .filter(|c| !('\u{E000}'..='\u{E0FF}').contains(c))
                .collect();
            let kept: String = expanded
                .chars()
                .filter(|c| !('\u{E000}'..='\u{E0FF}').contains(c))
                .collect();
            assert!(kept.len() >= plain.len(), "{garbage:?}");
        }
    }

    /// FNV-1a over the first `PINNED` entries, each ended by a 0 byte. Stored records depend on
    /// where each entry is: append to the table and raise `PINNED` with the new hash, never
    /// change what is already here.
    #[test]
    fn table_prefix_is_pinned() {
        const PINNED: usize = 174;
        const HASH: u64 = 0xE8CB_A274_B136_3456;
        let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
        for entry in &TABLE[..PINNED] {
            for &b in entry.as_bytes().iter().chain([0u8].iter()) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        assert_eq!(LEN, PINNED, "a new entry: pin it too");
        assert_eq!(
            hash, HASH,
            "an entry changed or moved: stored records would read wrong"
        );
    }

    #[test]
    fn table_entries_are_distinct_and_useful() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(a.len() >= 4, "{a:?} saves nothing");
            assert!(!TABLE[..i].contains(a), "{a:?} twice");
        }
    }
}
