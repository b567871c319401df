//! Relative positions in buckets, as T5 and MPNet bias their attention scores: one bucket per offset (key minus
//! query) near the query, logarithmically wider ones beyond, up to `max_distance`.

/// transformers' `_relative_position_bucket` (T5) and `relative_position_bucket` (MPNet, always bidirectional):
/// with `bidirectional`, half the buckets for keys after the query; otherwise (T5's decoder) only keys before it
/// count.
pub fn bucket(relative: i64, bidirectional: bool, buckets: usize, max_distance: usize) -> u32 {
    let mut buckets = buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = buckets / 2;
    bucket += if distance < max_exact {
        distance
    } else {
        // In f32, as torch computes it.
        let far = (distance as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
            * (buckets - max_exact) as f32;
        (max_exact + far as i64).min(buckets - 1)
    };
    bucket as u32
}
