//! The unified text diff of two small text files (`--content`).

/// A short unified diff of two texts (whole-file hunk, changed lines only
/// with up to 3 lines of context).
pub(super) fn unified(a: &str, b: &str) -> String {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    // Longest common subsequence table (files are at most 64 KiB).
    let (n, m) = (la.len(), lb.len());
    if n * m > 4_000_000 {
        return format!("(too many lines to diff: {n} and {m})");
    }
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if la[i] == lb[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && la[i] == lb[j] {
            ops.push((' ', la[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || t[i][j + 1] >= t[i + 1][j]) {
            ops.push(('+', lb[j]));
            j += 1;
        } else {
            ops.push(('-', la[i]));
            i += 1;
        }
    }
    let keep: Vec<bool> = (0..ops.len())
        .map(|k| {
            let lo = k.saturating_sub(3);
            let hi = (k + 3).min(ops.len() - 1);
            ops[lo..=hi].iter().any(|(c, _)| *c != ' ')
        })
        .collect();
    let mut s = String::from("--- A\n+++ B\n");
    let mut gap = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if keep[k] {
            if gap {
                s.push_str("@@\n");
                gap = false;
            }
            s.push(*c);
            s.push_str(line);
            s.push('\n');
        } else {
            gap = true;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_shows_changed_lines() {
        let d = unified("hello\nworld\n", "hello\nthere\n");
        assert!(
            d.contains("-world\n") && d.contains("+there\n") && d.contains(" hello\n"),
            "{d}"
        );
    }
}
