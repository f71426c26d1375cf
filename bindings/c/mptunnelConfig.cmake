# CMake package of libmptunnel, installed by `make install` as
# <prefix>/lib/cmake/mptunnel/mptunnelConfig.cmake:
#
#   find_package(mptunnel 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE mptunnel::mptunnel)          # libmptunnel.so
#   target_link_libraries(app PRIVATE mptunnel::mptunnel_static)   # libmptunnel.a
#
# Both targets carry the include directory (mptunnel.h, and the C++17 mptunnel.hpp).
# Sets mptunnel_VERSION.

# <prefix>/lib/cmake/mptunnel -> <prefix>, so the installed tree can be moved.
get_filename_component(_mptunnel_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

foreach(_mptunnel_file lib/libmptunnel.so lib/libmptunnel.a include/mptunnel.h)
  if(NOT EXISTS "${_mptunnel_prefix}/${_mptunnel_file}")
    set(mptunnel_FOUND FALSE)
    set(mptunnel_NOT_FOUND_MESSAGE "missing ${_mptunnel_prefix}/${_mptunnel_file}")
    unset(_mptunnel_file)
    unset(_mptunnel_prefix)
    return()
  endif()
endforeach()
unset(_mptunnel_file)

# The static library needs the system libraries Rust's std uses (pthread, dl, m, ...).
include(CMakeFindDependencyMacro)
find_dependency(Threads)

if(NOT TARGET mptunnel::mptunnel)
  add_library(mptunnel::mptunnel SHARED IMPORTED)
  set_target_properties(mptunnel::mptunnel PROPERTIES
    IMPORTED_LOCATION "${_mptunnel_prefix}/lib/libmptunnel.so"
    # libmptunnel.so has no SONAME: CMake then links it as -lmptunnel, so programs record
    # "libmptunnel.so" (found through the rpath) instead of an absolute path.
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${_mptunnel_prefix}/include")
endif()

if(NOT TARGET mptunnel::mptunnel_static)
  add_library(mptunnel::mptunnel_static STATIC IMPORTED)
  set_target_properties(mptunnel::mptunnel_static PROPERTIES
    IMPORTED_LOCATION "${_mptunnel_prefix}/lib/libmptunnel.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "${_mptunnel_prefix}/include"
    # rustc --print native-static-libs: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m;rt;util;gcc_s")
endif()

# find_package() sets mptunnel_VERSION from mptunnelConfigVersion.cmake; when this file is
# included directly, take it from the header.
if(NOT mptunnel_VERSION)
  file(STRINGS "${_mptunnel_prefix}/include/mptunnel.h" _mptunnel_define
       REGEX "^#define MPT_VERSION_STRING ")
  string(REGEX REPLACE "^#define MPT_VERSION_STRING \"([^\"]*)\".*" "\\1"
         mptunnel_VERSION "${_mptunnel_define}")
  unset(_mptunnel_define)
endif()

unset(_mptunnel_prefix)
