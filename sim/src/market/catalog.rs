//! Catalog naming: series templates and the Kalshi-style tickers, titles and dates of series,
//! events and markets (`KXHIGHNY` → `KXHIGHNY-26NOV29` → `KXHIGHNY-26NOV29-T54`).
//!
//! Uniqueness is by construction: series tickers differ by template, place and a letter suffix;
//! an event ticker is its series plus the date of the series' next period (a per-series counter,
//! with a cycle suffix should a two-digit year ever wrap); a market ticker is its event plus a
//! strike that differs for every market of the event. The engine still checks it on insert.

use super::model::{EventInfo, SeriesInfo, civil_from_days};

/// How often a series lists a new event, which also fixes its date code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    /// `26NOV2917`.
    Hourly,
    /// `26NOV29`.
    Daily,
    /// `26DEC`.
    Monthly,
}

/// How a series names its markets' strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrikeStyle {
    /// Whole degrees: `T54`.
    Degrees,
    /// Dollar thresholds just below a round number: `T113999.99`.
    DollarsMinusCent { base: u32, step: u32 },
    /// Rates in quarter points: `T4.25`.
    QuarterPoints,
    /// Index ranges: `B4487`.
    Bucket { base: u32, step: u32 },
    /// Tenths of a percent: `T0.3`.
    Tenths,
}

pub(crate) struct Template {
    prefix: &'static str,
    places: &'static [&'static str],
    title: &'static str,
    category: &'static str,
    period: Period,
    strike: StrikeStyle,
}

const TEMPLATES: &[Template] = &[
    Template {
        prefix: "KXHIGH",
        places: &["NY", "CHI", "MIA", "AUS", "DEN", "LAX", "PHIL", "SEA"],
        title: "Highest temperature in",
        category: "Climate and Weather",
        period: Period::Daily,
        strike: StrikeStyle::Degrees,
    },
    Template {
        prefix: "KXBTCD",
        places: &[""],
        title: "Bitcoin price",
        category: "Crypto",
        period: Period::Hourly,
        strike: StrikeStyle::DollarsMinusCent { base: 108_000, step: 250 },
    },
    Template {
        prefix: "KXETHD",
        places: &[""],
        title: "Ethereum price",
        category: "Crypto",
        period: Period::Hourly,
        strike: StrikeStyle::DollarsMinusCent { base: 3_800, step: 20 },
    },
    Template {
        prefix: "FED",
        places: &[""],
        title: "Fed funds rate",
        category: "Economics",
        period: Period::Monthly,
        strike: StrikeStyle::QuarterPoints,
    },
    Template {
        prefix: "KXINXD",
        places: &[""],
        title: "S&P 500 close",
        category: "Financials",
        period: Period::Daily,
        strike: StrikeStyle::Bucket { base: 6_400, step: 25 },
    },
    Template {
        prefix: "KXCPI",
        places: &["", "CORE"],
        title: "CPI change",
        category: "Economics",
        period: Period::Monthly,
        strike: StrikeStyle::Tenths,
    },
    Template {
        prefix: "KXRAIN",
        places: &["NYC", "CHI", "SEA", "HOU"],
        title: "Rain in",
        category: "Climate and Weather",
        period: Period::Daily,
        strike: StrikeStyle::Tenths,
    },
];

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// A series' naming state: its template and the index of its next event's period.
#[derive(Debug, Clone)]
pub(crate) struct SeriesNaming {
    template: usize,
    place: &'static str,
    /// Period index (hours/days/months since the epoch) of the next event.
    next_period: i64,
    /// First period index, to detect a two-digit-year wrap.
    first_period: i64,
}

fn letters(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
        n -= 1;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// Number of distinct series templates × places (before letter suffixes are needed).
fn combos() -> usize {
    TEMPLATES.iter().map(|t| t.places.len()).sum()
}

/// The naming and catalog entry of the `index`-th series, starting its dates at `start_ts_ns`
/// plus `offset_periods` (so series do not all list the same dates).
pub(crate) fn make_series(
    index: usize,
    start_ts_ns: i64,
    offset_periods: i64,
) -> (SeriesNaming, SeriesInfo) {
    let combo = index % combos();
    let round = index / combos();
    let mut rest = combo;
    let mut template = 0;
    while rest >= TEMPLATES[template].places.len() {
        rest -= TEMPLATES[template].places.len();
        template += 1;
    }
    let t = &TEMPLATES[template];
    let place = t.places[rest];
    let suffix = if round == 0 { String::new() } else { letters(round - 1) };
    let ticker = format!("{}{}{}", t.prefix, place, suffix);
    let start_s = start_ts_ns.div_euclid(1_000_000_000);
    let first_period = match t.period {
        Period::Hourly => start_s.div_euclid(3_600),
        Period::Daily => start_s.div_euclid(86_400),
        Period::Monthly => {
            let (y, m, _) = civil_from_days(start_s.div_euclid(86_400));
            y * 12 + m - 1
        }
    } + offset_periods;
    let title =
        if place.is_empty() { t.title.to_string() } else { format!("{} {}", t.title, place) };
    let frequency = match t.period {
        Period::Hourly => "hourly",
        Period::Daily => "daily",
        Period::Monthly => "monthly",
    };
    (
        SeriesNaming { template, place, next_period: first_period, first_period },
        SeriesInfo {
            ticker,
            title: format!(
                "{title}{}",
                if round == 0 { String::new() } else { format!(" ({round})") }
            ),
            category: t.category.to_string(),
            frequency: frequency.to_string(),
        },
    )
}

impl SeriesNaming {
    /// Names the series' next event and advances the period counter.
    pub(crate) fn next_event(
        &mut self,
        series: u32,
        series_ticker: &str,
        markets: u32,
    ) -> EventInfo {
        let p = self.next_period;
        self.next_period += 1;
        let t = &TEMPLATES[self.template];
        let (code, human) = match t.period {
            Period::Hourly => {
                let (y, m, d) = civil_from_days(p.div_euclid(24));
                let h = p.rem_euclid(24);
                (
                    format!("{:02}{}{:02}{:02}", y.rem_euclid(100), MONTHS[m as usize - 1], d, h),
                    format!("{} {d}, {y} at {h:02}:00", MONTHS[m as usize - 1]),
                )
            }
            Period::Daily => {
                let (y, m, d) = civil_from_days(p);
                (
                    format!("{:02}{}{:02}", y.rem_euclid(100), MONTHS[m as usize - 1], d),
                    format!("{} {d}, {y}", MONTHS[m as usize - 1]),
                )
            }
            Period::Monthly => {
                let (y, m) = (p.div_euclid(12), p.rem_euclid(12) as usize);
                (format!("{:02}{}", y.rem_euclid(100), MONTHS[m]), format!("{} {y}", MONTHS[m]))
            }
        };
        let periods_per_century = match t.period {
            Period::Hourly => 100 * 8_766,
            Period::Daily => 100 * 365,
            Period::Monthly => 1_200,
        };
        let cycle = (p - self.first_period) / periods_per_century;
        let code = if cycle == 0 { code } else { format!("{code}C{cycle}") };
        let place = if self.place.is_empty() { String::new() } else { format!(" {}", self.place) };
        EventInfo {
            ticker: format!("{series_ticker}-{code}"),
            series,
            title: format!("{}{place}?", t.title),
            sub_title: format!("On {human}"),
            mutually_exclusive: markets > 1 && matches!(t.strike, StrikeStyle::Bucket { .. }),
        }
    }

    /// The ticker suffix and yes sub-title of the `i`-th market of an event.
    pub(crate) fn strike(&self, i: u32) -> (String, String) {
        match TEMPLATES[self.template].strike {
            StrikeStyle::Degrees => {
                let deg = 40 + i;
                (format!("T{deg}"), format!("{deg}° or above"))
            }
            StrikeStyle::DollarsMinusCent { base, step } => {
                let v = base + i * step - 1;
                (format!("T{v}.99"), format!("${v}.99 or above"))
            }
            StrikeStyle::QuarterPoints => {
                let q = 300 + i * 25;
                (
                    format!("T{}.{:02}", q / 100, q % 100),
                    format!("Above {}.{:02}%", q / 100, q % 100),
                )
            }
            StrikeStyle::Bucket { base, step } => {
                let lo = base + i * step;
                (format!("B{}", lo + step / 2), format!("{lo} to {}", lo + step - 1))
            }
            StrikeStyle::Tenths => {
                (format!("T{}.{}", i / 10, i % 10), format!("Above {}.{}", i / 10, i % 10))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_795_910_400_000_000_000; // 2026-11-29T00:00:00Z

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn kalshi_style_tickers() {
        let (mut n, s) = make_series(0, START, 0);
        assert_eq!(s.ticker, "KXHIGHNY");
        let e = n.next_event(0, &s.ticker, 3);
        assert_eq!(e.ticker, "KXHIGHNY-26NOV29");
        assert_eq!(format!("{}-{}", e.ticker, n.strike(14).0), "KXHIGHNY-26NOV29-T54");

        let (mut n, s) = make_series(8, START, 17);
        assert_eq!(s.ticker, "KXBTCD");
        let e = n.next_event(8, &s.ticker, 3);
        assert_eq!(e.ticker, "KXBTCD-26NOV2917");
        assert_eq!(n.strike(24).0, "T113999.99");

        let (mut n, s) = make_series(10, START, 1);
        assert_eq!(s.ticker, "FED");
        assert_eq!(n.next_event(10, &s.ticker, 1).ticker, "FED-26DEC");
        assert_eq!(n.strike(5).0, "T4.25");

        let (_, s) = make_series(combos(), START, 0);
        assert_eq!(s.ticker, "KXHIGHNYA");
        assert_eq!(letters(26), "AA");
    }
}
