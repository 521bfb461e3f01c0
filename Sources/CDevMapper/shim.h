// libdevmapper, built statically from Debian's lvm2 source by Scripts/build-libdevmapper.sh into
// .build/deps; the pkg-config file imgtool-devmapper.pc there supplies the include and link flags
// (`make deps-build`, and PKG_CONFIG_PATH=.build/deps/lib/pkgconfig for swift build and test).
// No `link` line in the module map: without that .pc file the build stops here instead of
// silently picking up a system libdevmapper.so.
#if !__has_include(<imgtool-devmapper.h>)
#error "imgtool-devmapper.pc not found: run `make deps-build` (Scripts/build-libdevmapper.sh) and build with PKG_CONFIG_PATH=$PWD/.build/deps/lib/pkgconfig, as the Makefile does"
#endif
#include <imgtool-devmapper.h>
// DM_NAME_LEN, DM_UUID_LEN: the kernel's limits, terminating NUL included.
#include <linux/dm-ioctl.h>
