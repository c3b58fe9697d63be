/* sim/city.c - the demo city's devices and what they report: daily shapes in local time
 * (rush hours, night lighting, water demand peaks, evening rain on the drains), sensor noise,
 * values rounded as sensors send them, and the readings a fault produces. */
#include "sim/sim.h"

#include <math.h>
#include <stdio.h>

#define PI_ 3.14159265358979323846

static const char *const wards[SIM_WARDS] = {
    "phan_dinh_phung", "hoang_van_thu", "trung_vuong", "quang_trung", "gia_sang",   "tuc_duyen",
    "dong_quang",      "quang_vinh",    "tan_thinh",   "thinh_dan",   "tan_lap",    "phu_xa",
    "trung_thanh",     "tan_thanh",     "cam_gia",     "huong_son",   "tich_luong", "tan_long",
    "quan_trieu",      "dong_bam",      "chua_hang",   "phuc_ha",     "phuc_xuan",  "phuc_triu",
    "thinh_duc",       "tan_cuong",     "quyet_thang", "phuc_tri",    "son_cam",    "cao_ngan",
    "linh_son",        "huong_thuong",
};

static const struct {
    const char *measurement, *domain, *prefix;
    int fields;
} kinds[SIM_KINDS] = {
    { "camera", "cameras", "cam", 3 },   { "lighting", "lighting", "lamp", 3 },
    { "traffic", "traffic", "tc", 3 },   { "water", "water", "ws", 4 },
    { "drainage", "drainage", "dr", 2 }, { "power", "emergency", "sub", 1 },
};

const char *sim_ward(int i)
{
    return wards[((i % SIM_WARDS) + SIM_WARDS) % SIM_WARDS];
}

const char *sim_measurement(sim_kind k)
{
    return kinds[k].measurement;
}

const char *sim_domain(sim_kind k)
{
    return kinds[k].domain;
}

const char *sim_prefix(sim_kind k)
{
    return kinds[k].prefix;
}

int sim_fields(sim_kind k)
{
    return kinds[k].fields;
}

/* Uniform noise in [-1, 1), deterministic per (seed, device, t, field). */
static double noise(uint64_t seed, uint64_t dev, int64_t t, int field)
{
    uint64_t h = iocd_mix64(seed * 0x9E3779B97F4A7C15ULL ^ dev * 0x632BE59BD9B4E019ULL ^
                            (uint64_t)t * 0x94D049BB133111EBULL ^ (uint64_t)field);
    return (double)(h >> 11) / (double)(1ULL << 52) - 1.0;
}

double sim_local_hour(int64_t t_ms)
{
    int64_t s = t_ms / 1000 + 7 * 3600;

    return (double)(((s % 86400) + 86400) % 86400) / 3600.0;
}

sim_kind sim_kind_of(uint64_t d)
{
    uint64_t r = iocd_mix64(d * 7919) % 100;

    return r < 40 ? SIM_LIGHT : r < 65 ? SIM_CAMERA : r < 85 ? SIM_TRAFFIC : SIM_WATER;
}

int sim_ward_of(uint64_t d)
{
    return (int)(iocd_mix64(d) % SIM_WARDS);
}

int sim_line(char *out, size_t cap, sim_kind k, uint64_t dev, int ward, int64_t t, uint64_t seed,
             sim_fault f)
{
    double h = sim_local_hour(t), n0 = noise(seed, dev, t, 0), n1 = noise(seed, dev, t, 1),
           n2 = noise(seed, dev, t, 2);
    bool night = h >= 17.9 || h < 5.75;
    double rush = exp(-pow((h - 8.0) / 1.0, 2)) + exp(-pow((h - 17.5) / 1.2, 2));
    bool dark = f == SIM_FAULT_DARK || f == SIM_FAULT_POWER;
    int len = snprintf(out, cap, "%s,ward=%s,domain=%s,device=%s-%05llu ", kinds[k].measurement,
                       sim_ward(ward), kinds[k].domain, kinds[k].prefix, (unsigned long long)dev);

    if (len < 0 || (size_t)len >= cap)
        return 0;
    switch (k) {
    case SIM_CAMERA: {
        bool online = !dark && (iocd_mix64(dev ^ (uint64_t)(t / 600000)) % 500) != 0;
        len += snprintf(out + len, cap - (size_t)len, "fps=%di,bitrate_kbps=%di,online=%di",
                        online ? 25 : 0, online ? 2048 + (int)(n0 * 300) : 0, online ? 1 : 0);
        break;
    }
    case SIM_LIGHT: {
        bool on = night && !dark;
        double power = on ? 120.0 + n0 * 6.0 : 0.0;
        double lux = on      ? 15.0 + n1 * 2.0
                     : night ? 0.5
                             : 8000.0 * sin(PI_ * (h - 6.0) / 12.0) + n1 * 40.0;
        if (lux < 0)
            lux = 0;
        len += snprintf(out + len, cap - (size_t)len, "on=%di,power_w=%.1f,lux=%.1f", on ? 1 : 0,
                        power, lux);
        break;
    }
    case SIM_TRAFFIC: {
        /* vehicles_total counts since the counter started: 1.2 vehicles/s plus the rush
         * hours' integral (erf of the two peaks), so rate() gives the daily shape. */
        double local_s = (double)(t / 1000 + 7 * 3600), days = floor(local_s / 86400.0);
        double peaks =
            0.5 * sqrt(PI_) * ((1.0 + erf(h - 8.0)) + 1.2 * (1.0 + erf((h - 17.5) / 1.2)));
        double total = (double)(iocd_mix64(dev) % 100000) + 1.2 * local_s +
                       21600.0 * (days * sqrt(PI_) * 2.2 + peaks);
        double speed = f == SIM_FAULT_JAM ? 4.0 + 2.0 * n1 : 45.0 - 25.0 * rush + 3.0 * n1;
        double occ = f == SIM_FAULT_JAM ? 92.0 + 3.0 * n2 : 8.0 + 55.0 * rush + 2.0 * n2;
        len += snprintf(out + len, cap - (size_t)len,
                        "vehicles_total=%.0fi,avg_speed_kmh=%.1f,occupancy_pct=%.1f", floor(total),
                        speed, occ);
        break;
    }
    case SIM_WATER: {
        double demand =
            0.5 + 0.3 * exp(-pow((h - 6.5) / 1.5, 2)) + 0.35 * exp(-pow((h - 19.0) / 2.0, 2));
        double pressure =
            f == SIM_FAULT_PRESSURE ? 0.9 + 0.05 * n0 : 2.6 - 0.6 * demand + 0.01 * n0;
        len += snprintf(out + len, cap - (size_t)len,
                        "pressure_bar=%.3f,flow_m3h=%.1f,level_m=%.2f,pump_on=%di", pressure,
                        80.0 + 120.0 * demand + 2.0 * n1, 4.0 - 1.5 * demand + 0.01 * n2,
                        demand > 0.6 ? 1 : 0);
        break;
    }
    case SIM_DRAIN: {
        double rain = exp(-pow((h - 16.0) / 1.5, 2)); /* afternoon storms */
        double level = f == SIM_FAULT_FLOOD ? 2.7 + 0.05 * n0 : 0.6 + 0.9 * rain + 0.02 * n0;
        len += snprintf(out + len, cap - (size_t)len, "level_m=%.2f,pump_on=%di", level,
                        dark          ? 0
                        : level > 1.2 ? 1
                                      : 0);
        break;
    }
    case SIM_POWER:
        len += snprintf(out + len, cap - (size_t)len, "feed_on=%di", f == SIM_FAULT_POWER ? 0 : 1);
        break;
    case SIM_KINDS:
        return 0;
    }
    if (len < 0 || (size_t)len >= cap)
        return 0;
    len += snprintf(out + len, cap - (size_t)len, " %lld\n", (long long)t);
    return len < 0 || (size_t)len >= cap ? 0 : len;
}
