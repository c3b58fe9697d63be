/* sim/sim.h - the demo city: a deterministic model of an IOC's devices (cameras, street
 * lights, traffic counters, water stations, drains, ward power feeds) across the wards of
 * Thai Nguyen, with daily shapes in local time, noise, and faults injected on demand. It is
 * shared by `iocd simulate` (a live city at real-time pace) and bench/loadgen (the same city
 * replayed at full speed). Pure functions and plain data; no I/O. */
#ifndef IOCD_SIM_H
#define IOCD_SIM_H

#include "common/common.h"

#define SIM_WARDS 32

typedef enum sim_kind {
    SIM_CAMERA,  /* camera: fps, bitrate_kbps, online */
    SIM_LIGHT,   /* lighting: on, power_w, lux */
    SIM_TRAFFIC, /* traffic: vehicles_total, avg_speed_kmh, occupancy_pct */
    SIM_WATER,   /* water: pressure_bar, flow_m3h, level_m, pump_on */
    SIM_DRAIN,   /* drainage: level_m, pump_on */
    SIM_POWER,   /* power: feed_on (one per ward substation) */
    SIM_KINDS,
} sim_kind;

/* What has gone wrong with a device (or, for SIM_FAULT_POWER, a whole ward). */
typedef enum sim_fault {
    SIM_OK,
    SIM_FAULT_DARK,     /* a camera offline; a lamp off; a drain pump stopped */
    SIM_FAULT_JAM,      /* a junction jammed: speed falls, occupancy rises */
    SIM_FAULT_PRESSURE, /* a water main bursts: pressure falls */
    SIM_FAULT_FLOOD,    /* a drain rises towards overflow */
    SIM_FAULT_POWER,    /* the ward's feed is off: its lamps and cameras go dark too */
} sim_fault;

/* The slug of ward i (0 <= i < SIM_WARDS), e.g. "phan_dinh_phung". */
const char *sim_ward(int i);
/* Measurement, domain and device-id prefix of a kind, and the number of fields it sends. */
const char *sim_measurement(sim_kind k);
const char *sim_domain(sim_kind k);
const char *sim_prefix(sim_kind k);
int sim_fields(sim_kind k);
/* The kind and ward of device d in a city mix: 40 % lights, 25 % cameras, 20 % traffic,
 * 15 % water (drains and power feeds are added per ward by the simulator). */
sim_kind sim_kind_of(uint64_t d);
int sim_ward_of(uint64_t d);

/* Writes the line-protocol line (newline included) device dev of kind k in ward reports at
 * t_ms (a millisecond timestamp), with fault f; returns its length (0 if cap is too small).
 * Deterministic in (seed, dev, t_ms). */
int sim_line(char *out, size_t cap, sim_kind k, uint64_t dev, int ward, int64_t t_ms, uint64_t seed,
             sim_fault f);

/* Local hour of day in Asia/Ho_Chi_Minh (UTC+7): lights are on when it is dark. */
double sim_local_hour(int64_t t_ms);

#endif
