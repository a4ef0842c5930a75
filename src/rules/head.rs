//! The head of a chunk stream: the patterns anchored at fixed offsets
//! (`$a at K`) that the search may miss and its replay finds, and what its
//! bytes must hold for that replay to find one.
//!
//! The search may miss an anchored pattern: YARA-X checks most only at
//! `K` bytes past the start of a block, and the search's blocks start at
//! scanner addresses of their own (see `scanner::batch`). A stream's
//! verdict therefore replays its first bytes at their real offsets, which
//! costs a YARA-X scan per close. (What the search does find, anchored or
//! not, is replayed from its spans.) Most streams cannot hold an anchored
//! match at all: every match of `{25 50 44 46}` starts with `%PDF`, so a
//! stream whose bytes at `K` differ has nothing for the replay to find, and
//! its verdict skips it ([`HeadPlan::may_match`]). The head's length
//! follows the anchored patterns too: `K` plus the longest match of the
//! pattern anchored there, not of the longest pattern in the rule set.

use serde::Serialize;
use yara_x_parser::ast;

/// A pattern anchored at a literal offset by a condition (`$a at K`, or
/// `any of ($a, $b) at K`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HeadAnchor {
    /// The offset `K`.
    pub offset: u64,
    /// Bytes every match starts with (empty: not known, any bytes may
    /// start one).
    pub prefix: Vec<u8>,
    /// Whether `prefix` is compared without regard to ASCII case.
    pub nocase: bool,
    /// Longest match of the pattern; `None` when unbounded.
    pub max_len: Option<usize>,
}

impl HeadAnchor {
    /// The anchor of `pattern` at `offset`, its longest match `max_len`.
    pub fn of(pattern: &ast::Pattern<'_>, offset: u64, max_len: Option<usize>) -> HeadAnchor {
        let (prefix, nocase) = match_prefix(pattern).unwrap_or_default();
        HeadAnchor {
            offset,
            prefix,
            nocase,
            max_len,
        }
    }

    /// An anchor whose pattern is not known (a pattern named in a
    /// `for .. of` body): any bytes may start a match.
    pub fn unknown(offset: u64) -> HeadAnchor {
        HeadAnchor {
            offset,
            prefix: Vec::new(),
            nocase: false,
            max_len: None,
        }
    }

    /// Whether a stream whose first bytes are `head` may have a match of
    /// this anchor (a stream that ends before the prefix does has none:
    /// the head holds every byte up to the anchor and past it).
    fn may_match(&self, head: &[u8]) -> bool {
        let Ok(start) = usize::try_from(self.offset) else {
            return false;
        };
        let Some(rest) = head.get(start..).filter(|rest| !rest.is_empty()) else {
            return false;
        };
        let Some(bytes) = rest.get(..self.prefix.len()) else {
            return false;
        };
        match self.nocase {
            true => bytes.eq_ignore_ascii_case(&self.prefix),
            false => bytes == self.prefix,
        }
    }
}

/// A pattern anchored past what a head keeps (`$a at 3419456`), whose
/// matches start with known bytes: the search checks them where the
/// stream's bytes pass the anchor ([`HeadPlan::far_hits`]), and keeps a
/// replay span there like a match's. (YARA-X's block scanner verifies an
/// anchored literal at its offset less the block's base, so the verdict's
/// replay of that span, at its real offset, finds it.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FarAnchor {
    /// The anchor; its prefix is known and its longest match too.
    pub anchor: HeadAnchor,
    /// Its rule's identifier.
    pub rule: String,
}

impl FarAnchor {
    /// Whether the search can check `anchor` where the stream's bytes pass
    /// it: every match starts with known bytes, and is at most `cap` long
    /// (the window cap: its pattern then sets the window, and the tail
    /// holds a match whole).
    pub fn checkable(anchor: &HeadAnchor, cap: usize) -> bool {
        !anchor.prefix.is_empty() && anchor.max_len.is_some_and(|len| len <= cap)
    }
}

/// The anchored patterns of a rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeadPlan {
    anchors: Vec<HeadAnchor>,
    /// Anchors past the head.
    #[serde(skip)]
    far: Vec<FarAnchor>,
}

impl HeadPlan {
    /// The plan of these anchors (duplicates are dropped).
    pub fn new(mut anchors: Vec<HeadAnchor>) -> HeadPlan {
        anchors.sort_unstable();
        anchors.dedup();
        HeadPlan {
            anchors,
            far: Vec::new(),
        }
    }

    /// Adds the anchors past the head (see [`FarAnchor`]).
    pub fn with_far(mut self, far: Vec<FarAnchor>) -> HeadPlan {
        self.far = far;
        self
    }

    /// The far anchors whose prefix is in `data` (bytes of a stream from
    /// offset `start`) at its anchor: the range a match there may take in
    /// `data` (perhaps past its end, where the stream's next bytes hold
    /// the rest), and the anchor's rule.
    pub fn far_hits<'a>(
        &'a self,
        start: u64,
        data: &'a [u8],
    ) -> impl Iterator<Item = (std::ops::Range<usize>, &'a str)> + 'a {
        self.far.iter().filter_map(move |far| {
            let at = usize::try_from(far.anchor.offset.checked_sub(start)?).ok()?;
            let len = far.anchor.max_len?;
            let bytes = data.get(at..at.checked_add(far.anchor.prefix.len())?)?;
            let hit = match far.anchor.nocase {
                true => bytes.eq_ignore_ascii_case(&far.anchor.prefix),
                false => bytes == far.anchor.prefix,
            };
            hit.then(|| (at..at + len, far.rule.as_str()))
        })
    }

    /// Bytes of a stream's head its verdict replays: up to the end of the
    /// longest match at the furthest anchor, a match being at most
    /// `window` long (0 when no pattern is anchored).
    pub fn head_len(&self, window: usize) -> usize {
        self.anchors
            .iter()
            .map(|a| a.offset as usize + a.max_len.unwrap_or(window).min(window))
            .max()
            .unwrap_or(0)
    }

    /// Whether the replay of a stream's head (its first bytes, `head`) may
    /// find an anchored match: false when no anchored pattern's prefix is
    /// at its anchor.
    pub fn may_match(&self, head: &[u8]) -> bool {
        self.anchors.iter().any(|anchor| anchor.may_match(head))
    }

    /// Whether `head`, the first bytes of a stream, already rules out
    /// every anchored match, whatever bytes follow: every anchor has a
    /// known prefix, the head holds each one's range, and no prefix is
    /// there. The stream then need not keep its head for the replay.
    pub fn rules_out(&self, head: &[u8]) -> bool {
        let decided = self.anchors.iter().all(|a| {
            !a.prefix.is_empty() && (a.offset as usize).saturating_add(a.prefix.len()) <= head.len()
        });
        decided && !self.may_match(head)
    }
}

/// Bytes every match of a pattern starts with, and whether they compare
/// without regard to ASCII case: a text's without `wide`, `xor` or
/// `base64` (`fullword` only narrows where it matches), or the plain bytes
/// a hex pattern starts with (`47 49 46 38` of `{47 49 46 38 3? 61}`,
/// maybe none). `None` for regular expressions and the other texts.
pub(crate) fn match_prefix(pattern: &ast::Pattern<'_>) -> Option<(Vec<u8>, bool)> {
    match pattern {
        ast::Pattern::Text(text) => {
            let m = &text.modifiers;
            let plain = m.wide().is_none()
                && m.xor().is_none()
                && m.base64().is_none()
                && m.base64wide().is_none();
            plain.then(|| (text.text.value.to_vec(), m.nocase().is_some()))
        }
        ast::Pattern::Hex(hex) => {
            let plain = hex.sub_patterns.iter().map_while(|token| match token {
                ast::HexToken::Byte(byte) if byte.mask == 0xFF => Some(byte.value),
                _ => None,
            });
            Some((plain.collect(), false))
        }
        ast::Pattern::Regexp(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchors_of(src: &str) -> Vec<HeadAnchor> {
        let tree = ast::AST::from(src);
        assert!(tree.errors().is_empty(), "{:?}", tree.errors());
        let rule = tree.rules().next().unwrap();
        rule.patterns
            .iter()
            .flatten()
            .map(|p| HeadAnchor::of(p, 2, Some(8)))
            .collect()
    }

    #[test]
    fn prefixes_are_known_for_plain_text_and_hex() {
        let anchors = anchors_of(
            r#"rule r { strings: $a = "PK" $b = "pk" nocase $c = { 25 50 ?? 46 }
               $d = "x" wide $e = "y" xor $f = /ab+/ $g = "zz" fullword
               condition: any of them }"#,
        );
        let prefixes: Vec<(&[u8], bool)> = anchors
            .iter()
            .map(|a| (a.prefix.as_slice(), a.nocase))
            .collect();
        assert_eq!(
            prefixes,
            [
                (&b"PK"[..], false),
                (b"pk", true),
                (b"%P", false),
                (b"", false),
                (b"", false),
                (b"", false),
                (b"zz", false),
            ]
        );
    }

    #[test]
    fn a_head_may_match_only_with_the_prefix_at_the_anchor() {
        let anchor = |prefix: &[u8], nocase| HeadAnchor {
            offset: 2,
            prefix: prefix.to_vec(),
            nocase,
            max_len: Some(4),
        };
        let plan = HeadPlan::new(vec![anchor(b"PK", false)]);
        assert!(plan.may_match(b"xxPK"));
        assert!(plan.may_match(b"xxPKzzz"));
        assert!(!plan.may_match(b"xPKx"));
        assert!(!plan.may_match(b"xxpk"));
        // Too short to hold the prefix at the anchor.
        assert!(!plan.may_match(b"xxP"));
        assert!(!plan.may_match(b""));
        let nocase = HeadPlan::new(vec![anchor(b"PK", true)]);
        assert!(nocase.may_match(b"xxpK"));
        // An unknown prefix may match wherever a byte is at the anchor.
        let unknown = HeadPlan::new(vec![HeadAnchor::unknown(2)]);
        assert!(!unknown.may_match(b"xx"));
        assert!(unknown.may_match(b"xxy"));
        assert!(unknown.may_match(b"abcdef"));
        assert!(!HeadPlan::default().may_match(b"xxPK"));
    }

    #[test]
    fn the_head_ends_after_the_longest_match_at_the_furthest_anchor() {
        let plan = HeadPlan::new(vec![
            HeadAnchor {
                offset: 100,
                prefix: b"a".to_vec(),
                nocase: false,
                max_len: Some(4),
            },
            HeadAnchor::unknown(0),
            HeadAnchor {
                offset: 10,
                prefix: Vec::new(),
                nocase: false,
                max_len: Some(500),
            },
        ]);
        // Unbounded and long patterns are cut at the window.
        assert_eq!(plan.head_len(64), 104);
        assert_eq!(plan.head_len(1024), 1024);
        assert_eq!(HeadPlan::default().head_len(1024), 0);
    }

    #[test]
    fn a_head_rules_matches_out_once_it_holds_every_prefix_range() {
        let anchor = |offset, prefix: &[u8]| HeadAnchor {
            offset,
            prefix: prefix.to_vec(),
            nocase: false,
            max_len: Some(8),
        };
        let plan = HeadPlan::new(vec![anchor(2, b"MZ"), anchor(6, b"PK")]);
        assert!(!plan.rules_out(b"..XX..P"), "PK at 6 may still come");
        assert!(plan.rules_out(b"..XX..PX"));
        assert!(!plan.rules_out(b"..MZ..PX"));
        assert!(!plan.rules_out(b"..XX..PK."));
        // An anchor whose pattern is not known never rules out, not even
        // before a byte at its offset came (when it `may_match` nothing).
        let unknown = HeadPlan::new(vec![anchor(2, b"MZ"), HeadAnchor::unknown(0)]);
        assert!(!unknown.rules_out(b"..XX...."));
        let unknown = HeadPlan::new(vec![anchor(2, b"MZ"), HeadAnchor::unknown(5)]);
        assert!(!unknown.rules_out(b"..XX."));
        assert!(HeadPlan::default().rules_out(b""));
    }
}
