/* rules/sun.c - sunrise and sunset from the city's latitude and longitude (the sunrise
 * equation, as in astronomical almanacs; good to about a minute), for lighting rules such as
 * "a lamp is off between sunset and sunrise". Pure arithmetic, no time zone database: the
 * local day comes from a fixed offset (Asia/Ho_Chi_Minh has no daylight saving). */
#include "rules/rules.h"

#include <math.h>

#define PI_     3.14159265358979323846
#define RAD     (PI_ / 180.0)
#define J2000   2451545.0
#define UNIX_JD 2440587.5

bool rule_sun_times(int64_t t_s, double lat, double lon, int tz_offset_s, int64_t *rise_out,
                    int64_t *set_out)
{
    int64_t local = t_s + tz_offset_s;
    int64_t day = (local >= 0 ? local / 86400 : (local - 86399) / 86400); /* local date */
    double noon_utc = (double)(day * 86400 + 43200 - tz_offset_s);        /* local noon */
    double jd = noon_utc / 86400.0 + UNIX_JD;
    double n = ceil(jd - J2000 + 0.0009 - 0.5);
    double jstar = n - lon / 360.0;
    double m = fmod(357.5291 + 0.98560028 * jstar, 360.0);
    double c = 1.9148 * sin(m * RAD) + 0.02 * sin(2 * m * RAD) + 0.0003 * sin(3 * m * RAD);
    double lambda = fmod(m + c + 180.0 + 102.9372, 360.0);
    double transit = J2000 + jstar + 0.0053 * sin(m * RAD) - 0.0069 * sin(2 * lambda * RAD);
    double sin_d = sin(lambda * RAD) * sin(23.4397 * RAD), cos_d = cos(asin(sin_d));
    double cos_w = (sin(-0.833 * RAD) - sin(lat * RAD) * sin_d) / (cos(lat * RAD) * cos_d);
    double w;

    if (cos_w < -1.0 || cos_w > 1.0)
        return false; /* the sun never sets, or never rises, that day */
    w = acos(cos_w) / RAD;
    *rise_out = (int64_t)llround(((transit - w / 360.0) - UNIX_JD) * 86400.0);
    *set_out = (int64_t)llround(((transit + w / 360.0) - UNIX_JD) * 86400.0);
    return true;
}
