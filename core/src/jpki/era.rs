//! Japanese eras, for the era digit of a JPKI date of birth.

use chrono::NaiveDate;

/// The era digit's meaning: `0` unknown, `1` Meiji … `5` Reiwa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Meiji = 1,
    Taisho = 2,
    Showa = 3,
    Heisei = 4,
    Reiwa = 5,
}

impl Era {
    pub fn digit(self) -> u8 {
        self as u8
    }
}

/// The era a date falls in, by the first day of each era (Meiji from its
/// proclamation, 1868-10-23). `None` before Meiji.
pub fn era_of(date: NaiveDate) -> Option<Era> {
    let starts = [
        (Era::Reiwa, (2019, 5, 1)),
        (Era::Heisei, (1989, 1, 8)),
        (Era::Showa, (1926, 12, 25)),
        (Era::Taisho, (1912, 7, 30)),
        (Era::Meiji, (1868, 10, 23)),
    ];
    starts.into_iter().find_map(|(era, (y, m, d))| {
        let start = NaiveDate::from_ymd_opt(y, m, d).expect("a real date");
        (date >= start).then_some(era)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn eras_change_on_their_first_day() {
        assert_eq!(era_of(d(1980, 2, 17)), Some(Era::Showa));
        assert_eq!(era_of(d(1989, 1, 7)), Some(Era::Showa));
        assert_eq!(era_of(d(1989, 1, 8)), Some(Era::Heisei));
        assert_eq!(era_of(d(2019, 4, 30)), Some(Era::Heisei));
        assert_eq!(era_of(d(2019, 5, 1)), Some(Era::Reiwa));
        assert_eq!(era_of(d(1926, 12, 24)), Some(Era::Taisho));
        assert_eq!(era_of(d(1912, 7, 29)), Some(Era::Meiji));
        assert_eq!(era_of(d(1868, 1, 1)), None);
        assert_eq!(Era::Showa.digit(), 3);
    }
}
