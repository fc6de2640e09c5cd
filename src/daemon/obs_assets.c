/* obs_assets.c — the dashboard's files, built into the binary from
 * web/dashboard/ (the Makefile turns each into a C array with xxd -i). */
#include <string.h>

#include "core/util.h"
#include "daemon/obs.h"

extern unsigned char web_dashboard_index_html[], web_dashboard_app_js[],
    web_dashboard_app_css[];
extern unsigned int web_dashboard_index_html_len, web_dashboard_app_js_len,
    web_dashboard_app_css_len;

const struct obs_asset *obs_asset_find(const char *path)
{
    static struct obs_asset assets[3];
    if (!assets[0].path) {
        assets[0] = (struct obs_asset){"/", "text/html; charset=utf-8", web_dashboard_index_html,
                                       web_dashboard_index_html_len};
        assets[1] = (struct obs_asset){"/app.js", "text/javascript; charset=utf-8",
                                       web_dashboard_app_js, web_dashboard_app_js_len};
        assets[2] = (struct obs_asset){"/app.css", "text/css; charset=utf-8",
                                       web_dashboard_app_css, web_dashboard_app_css_len};
    }
    if (strcmp(path, "/index.html") == 0)
        path = "/";
    for (size_t i = 0; i < ARRAY_LEN(assets); i++)
        if (strcmp(assets[i].path, path) == 0)
            return &assets[i];
    return NULL;
}
