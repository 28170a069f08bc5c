# `cmake --install` in FHS locations, and the Debian package (CPack).
# Included from the top-level CMakeLists.txt; docs/OPERATIONS.md explains.
#
#   DESTDIR=/tmp/stage cmake --install build --prefix /usr   # a staged tree
#   cpack --config build/CPackConfig.cmake -B build/package  # adjutant_*.deb
#
# With prefix /usr: /usr/bin/adjutantd and /usr/bin/adjutant, the leader
# election sidecar in /usr/libexec/adjutant/, the systemd units in
# /lib/systemd/system/, the example configuration in /etc/adjutant/ (a
# conffile in the .deb), the documentation in /usr/share/doc/adjutant/.
include(GNUInstallDirs)

# Absolute, like the paths systemd and the units expect, so not under the
# install prefix (but under DESTDIR).
set(ADJUTANT_SYSTEMD_UNIT_DIR "/lib/systemd/system" CACHE PATH
  "Where the systemd units are installed (absolute; default /lib/systemd/system)")
set(ADJUTANT_CONFIG_DIR "/etc/adjutant" CACHE PATH
  "Where the example adjutantd.toml is installed (absolute; default /etc/adjutant)")
set(ADJUTANT_PACKAGE_MAINTAINER "Adjutant maintainers <adjutant@localhost>" CACHE STRING
  "The Maintainer: field of the .deb")

install(TARGETS adjutantd adjutant RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS deploy/adjutant-pg-leader
  DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/adjutant)
install(FILES deploy/adjutantd.service deploy/adjutant-pg-leader.service
  DESTINATION ${ADJUTANT_SYSTEMD_UNIT_DIR})
install(FILES deploy/adjutantd.toml DESTINATION ${ADJUTANT_CONFIG_DIR})
install(FILES README.md docs/OPERATIONS.md docs/POSTGRES.md docs/API.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME adjutant)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${ADJUTANT_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "durable job queue and cron scheduler over gRPC")
set(CPACK_PACKAGE_DESCRIPTION
  "adjutantd keeps jobs in SQLite or PostgreSQL, leases them to workers over gRPC and fires cron schedules; adjutant is its command line.")
# The units and the configuration have absolute destinations: stage them
# under DESTDIR rather than under the package's prefix.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)  # used with CPACK_SET_DESTDIR
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
# Depends: computed by dpkg-shlibdeps (dpkg-dev) from the binaries' libraries,
# plus the time zones cron schedules need.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "tzdata")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3, python3-psycopg2, postgresql")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_CURRENT_LIST_DIR}/debian/conffiles
  ${CMAKE_CURRENT_LIST_DIR}/debian/postinst
  ${CMAKE_CURRENT_LIST_DIR}/debian/prerm
  ${CMAKE_CURRENT_LIST_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
