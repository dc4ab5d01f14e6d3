#include "label_metrics.h"

#include <math.h>
#include <stdlib.h>

int upm_label_average_views(float *scores, int32_t *labels, int n, int V, int C)
{
    if (V <= 1)
        return 0;
    double *avg = malloc(sizeof(double) * (size_t)C);
    if (!avg)
        return -1;
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < C; c++)
            avg[c] = 0;
        for (int v = 0; v < V; v++) {
            const float *s = scores + ((size_t)i * V + v) * C;
            double mx = s[0], sum = 0;
            for (int c = 1; c < C; c++)
                mx = s[c] > mx ? s[c] : mx;
            for (int c = 0; c < C; c++)
                sum += exp((double)s[c] - mx);
            for (int c = 0; c < C; c++)
                avg[c] += exp((double)s[c] - mx) / sum / V;
        }
        /* rows i*V .. were read before row i is written, and i <= i*V */
        for (int c = 0; c < C; c++)
            scores[(size_t)i * C + c] = (float)log(avg[c] > 1e-300 ? avg[c] : 1e-300);
        labels[i] = labels[(size_t)i * V];
    }
    free(avg);
    return 0;
}
