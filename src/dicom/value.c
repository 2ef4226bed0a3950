#include "dicom.h"
