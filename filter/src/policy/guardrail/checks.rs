//! Checksums and shape checks that turn a pattern's candidate into a finding: a
//! sixteen-digit order number is not a card unless it passes Luhn, a string of
//! capitals and digits is not an IBAN unless its mod-97 check holds. The patterns
//! find candidates; these reject the false positives.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Whether `digits` (ASCII digits and separators) pass the Luhn check with 13 to 19
/// digits, as every payment card number does.
pub fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match i % 2 {
            0 => d,
            _ if d * 2 > 9 => d * 2 - 9,
            _ => d * 2,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `candidate` (spaces allowed) is an IBAN whose mod-97 check holds: two
/// letters, two check digits, 11 to 30 letters or digits (15 to 34 in all).
pub fn iban(candidate: &str) -> bool {
    let chars: Vec<u8> = candidate
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&chars.len())
        || !chars[..2].iter().all(u8::is_ascii_uppercase)
        || !chars[2..4].iter().all(u8::is_ascii_digit)
        || !chars.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    // The first four characters move to the end; letters count as 10..35; the whole
    // number modulo 97 must be 1. Folded digit by digit, so no big integers.
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            _ => u32::from(c - b'A') + 10,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Whether `candidate` (`123-45-6789`) can be a US Social Security number: the
/// Social Security Administration never issues area 000, 666 or 900-999, group 00
/// or serial 0000.
pub fn ssn(candidate: &str) -> bool {
    let d: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().fold(0, |n, v| n * 10 + v);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Whether a phone candidate has as many digits as a phone number can (7 to 15,
/// E.164's maximum).
pub fn phone(candidate: &str) -> bool {
    let n = candidate.bytes().filter(u8::is_ascii_digit).count();
    (7..=15).contains(&n)
}

/// Whether `candidate` parses as an IPv4 or IPv6 address.
pub fn ip(candidate: &str) -> bool {
    candidate.parse::<Ipv4Addr>().is_ok() || candidate.parse::<Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_a_changed_digit() {
        for good in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005",
            "6011111111111117",
        ] {
            assert!(luhn(good), "{good}");
        }
        for bad in [
            "4111111111111112",
            "4111 1111 1111 1121",
            "1234567890123",
            "411111111111",
        ] {
            assert!(!luhn(bad), "{bad}");
        }
    }

    #[test]
    fn iban_checks_mod_97() {
        for good in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
        ] {
            assert!(iban(good), "{good}");
        }
        for bad in [
            "DE88370400440532013000",
            "GB82WEST12345698765433",
            "DE89",
            "1289370400440532013000",
        ] {
            assert!(!iban(bad), "{bad}");
        }
    }

    #[test]
    fn ssn_rejects_numbers_never_issued() {
        assert!(ssn("123-45-6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!ssn(bad), "{bad}");
        }
    }

    #[test]
    fn ip_and_phone_shapes() {
        assert!(ip("192.168.1.20"));
        assert!(ip("2001:db8::1"));
        assert!(!ip("10:30:00"));
        assert!(phone("+44 20 7946 0958"));
        assert!(!phone("+1 23"));
    }
}
