/* graylane — umbrella header. */
#ifndef GRAY_GRAY_H
#define GRAY_GRAY_H

#include "gray/common.h"
#include "gray/err.h"
#include "gray/policy.h"

#define GRAY_VERSION_STRING "0.1.0"

#endif
