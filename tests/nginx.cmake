# ngx_http_gray_module in Debian's nginx (label "nginx"): each test script
# in nginx/ runs a real nginx on 127.0.0.1 with the module loaded; one
# ctest per test function (`def t_...`) so they run in parallel. Included
# from tests/CMakeLists.txt when the module target exists.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
find_program(GRAY_NGINX_BIN nginx PATHS /usr/sbin /usr/local/sbin)
if(NOT GRAY_NGINX_BIN)
  message(STATUS "nginx tests: skipped, no nginx binary (apt-get install nginx)")
  return()
endif()

# gray_nginx_tests(SCRIPT PREFIX TIMEOUT ARGS...): one ctest PREFIX/t_name
# per test function of SCRIPT, run as `SCRIPT ARGS... t_name`.
function(gray_nginx_tests script prefix timeout)
  # A new test function re-runs cmake (the list is read at configure time).
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${script})
  file(STRINGS ${script} defs REGEX "^def t_")
  foreach(line ${defs})
    string(REGEX REPLACE "^def (t_[a-z0-9_]+).*" "\\1" name "${line}")
    add_test(NAME ${prefix}/${name} COMMAND ${Python3_EXECUTABLE} ${script} ${ARGN} ${name})
    set_tests_properties(${prefix}/${name} PROPERTIES LABELS nginx TIMEOUT ${timeout})
    set_tests_properties(${prefix}/${name} PROPERTIES ENVIRONMENT "${GRAY_NGINX_TEST_ENV}")
  endforeach()
endfunction()

# The module: routing of every rule case, tags, variables, trusted
# proxies, fallback, policy changes without reload, nginx -t, counters.
gray_nginx_tests(${CMAKE_CURRENT_LIST_DIR}/nginx/module_nginx.py nginx/module 120
                 ${GRAY_NGINX_BIN} ${CMAKE_BINARY_DIR}/nginx/ngx_http_gray_module.so
                 ${CMAKE_CURRENT_LIST_DIR}/data/rules)
