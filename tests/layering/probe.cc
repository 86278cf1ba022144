// Compiled by the layering tests with one layer's include roots only (its own
// and those of the layers below it): SLUICE_PROBE_HEADER names a header of
// that layer, which must compile, or of a layer above, which must not be
// found.
#include SLUICE_PROBE_HEADER

int main() { return 0; }
