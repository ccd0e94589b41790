//! Client-chosen objectIds.

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of a generated objectId; Parse Server generates 10 characters too.
pub const OBJECT_ID_LEN: usize = 10;

/// Generates a random objectId from 62 letters and digits (about 59 bits).
pub fn new_object_id() -> String {
    let mut bytes = [0u8; OBJECT_ID_LEN];
    getrandom::fill(&mut bytes).expect("wasi:random is always available");

    // 256 is not a multiple of 62, so the first 8 letters are very slightly more
    // likely. That does not matter for uniqueness at this length.
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_has_parse_shape() {
        let id = new_object_id();
        assert_eq!(id.len(), OBJECT_ID_LEN);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    }

    #[test]
    fn object_ids_differ() {
        assert_ne!(new_object_id(), new_object_id());
    }
}
