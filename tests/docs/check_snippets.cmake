# Compiles every C++ code block of some Markdown files, so that the documentation cannot drift
# from the library. Run with `cmake -P`; tests/CMakeLists.txt runs it as the ctest test
# readme_code_blocks_compile.
#
# The rules, for each Markdown file:
#   - Every fenced block (```) names its language. ```cpp (or c++, cxx, cc) blocks are compiled;
#     anything else (```sh, ```cmake, ```text...) is not. A block with no language is an error, so
#     that no C++ escapes by accident: pseudo-code and program output are ```text.
#   - A C++ block is a fragment of statements unless marked: it is compiled as the body of a
#     function, after tests/docs/snippet_prelude.hpp (the umbrella header, `namespace cs`, the
#     chrono literals, and declarations of the user's functions the snippets call). Its #include
#     lines are moved to the top of the file.
#   - HTML comments right above the opening fence (nothing, not even a blank line, in between)
#     say more; GitHub does not show them:
#       <!-- snippet toplevel -->         the block is namespace-scope code (a main(), a
#                                          specialisation, a function), compiled as a file of its
#                                          own after the prelude;
#       <!-- snippet context: CODE -->    CODE comes first (the names an excerpt assumes);
#       <!-- snippet quote: PATH -->      the block must also appear verbatim, as whole lines,
#                                          in PATH (relative to the repository's root), e.g. a
#                                          part of an example that CI builds and runs.
#     An unknown or misspelt `snippet` comment is an error.
#   - The statement blocks of all files are compiled together, one function each in a namespace
#     named after the block's file and line (one file per storage group), and each toplevel
#     block in a file of its own: a handful of -fsyntax-only compilations in all. `#line` directives make every diagnostic name
#     the Markdown file and line.
#   - Blocks that include storage/redis.hpp or storage/postgres.hpp are compiled only when the
#     client library's headers are known (REDIS_INCLUDES, POSTGRES_INCLUDES), and reported as
#     skipped otherwise (CI requires both libraries, so there they are always compiled).
#
# Variables:
#   COMPILER          the C++ compiler (GCC or Clang command line)
#   SOURCE_DIR        the repository's root: Markdown and quoted paths are relative to it
#   MARKDOWN          the Markdown files, separated by '|'
#   INCLUDE           the library's include directory
#   PRELUDE           tests/docs/snippet_prelude.hpp
#   OUT_DIR           where the generated files go (emptied first)
#   REDIS_INCLUDES    hiredis's include directories, separated by '|'; unset: skip its blocks
#   POSTGRES_INCLUDES libpq's include directories, separated by '|'; unset: skip its blocks
#   HAVE_REDIS, HAVE_POSTGRES  true when the library is found (its include directories may be
#                     the compiler's own, hence empty)

cmake_minimum_required(VERSION 3.16)

foreach(var COMPILER SOURCE_DIR MARKDOWN INCLUDE PRELUDE OUT_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "check_snippets.cmake: -D${var}=... is required")
  endif()
endforeach()

# CMake lists split at ';', group at '[' ']' and escape with '\': while a file is cut into a
# list of lines, those characters are stood in for by control characters no Markdown file has.
string(ASCII 1 _semi)
string(ASCII 2 _open)
string(ASCII 3 _close)
string(ASCII 4 _backslash)

function(_decode out text)
  string(REPLACE "${_semi}" ";" text "${text}")
  string(REPLACE "${_open}" "[" text "${text}")
  string(REPLACE "${_close}" "]" text "${text}")
  string(REPLACE "${_backslash}" "\\" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${OUT_DIR}")
file(MAKE_DIRECTORY "${OUT_DIR}")

set(errors "")          # problems found while reading, one paragraph each
set(units "")           # generated files to compile
set(blocks_total 0)
set(quotes_total 0)
set(skipped "")

# Adds one C++ block to the generated files. Reads md, md_id, block_line, block_body (decoded,
# newline-terminated lines), block_includes, block_toplevel, block_context, context_line.
macro(_add_block)
  set(_group core)
  if(block_includes MATCHES "storage/redis\\.hpp" OR
     (block_toplevel AND block_body MATCHES "#include[ ]*<cacheserialize/storage/redis\\.hpp>"))
    set(_group redis)
  elseif(block_includes MATCHES "storage/postgres\\.hpp" OR
         (block_toplevel AND block_body MATCHES "#include[ ]*<cacheserialize/storage/postgres\\.hpp>"))
    set(_group postgres)
  endif()
  set(_where "${md}:${block_line}")
  if((_group STREQUAL "redis" AND NOT HAVE_REDIS) OR
     (_group STREQUAL "postgres" AND NOT HAVE_POSTGRES))
    list(APPEND skipped "${_where} (needs ${_group}'s client library)")
  else()
    set(_context "")
    if(NOT block_context STREQUAL "")
      set(_context "#line ${context_line} \"${md}\"\n${block_context}\n")
    endif()
    if(block_toplevel)
      set(_file "${OUT_DIR}/${md_id}_L${block_line}.cpp")
      file(WRITE "${_file}"
        "// Generated by tests/docs/check_snippets.cmake from ${_where}: do not edit.\n"
        "#include \"${PRELUDE}\"\n${_context}#line ${block_line} \"${md}\"\n${block_body}")
      list(APPEND units "${_file}")
      set(_unit_blocks_${md_id}_L${block_line} "${_where}")
      set(_unit_group_${md_id}_L${block_line} "${_group}")
    else()
      string(APPEND _head_${_group} "${block_includes}")
      string(APPEND _body_${_group}
        "namespace snippet_${md_id}_line_${block_line} {\n"
        "[[maybe_unused]] void snippet() {\n${_context}#line ${block_line} \"${md}\"\n"
        "${block_body}}\n}  // namespace snippet_${md_id}_line_${block_line}\n\n")
      list(APPEND _unit_blocks_${_group} "${_where}")
    endif()
  endif()
endmacro()

foreach(group core redis postgres)
  set(_head_${group} "")
  set(_body_${group} "")
  set(_unit_blocks_${group} "")
endforeach()

string(REPLACE "|" ";" markdown_files "${MARKDOWN}")
foreach(md IN LISTS markdown_files)
  set(md_path "${SOURCE_DIR}/${md}")
  if(NOT EXISTS "${md_path}")
    message(FATAL_ERROR "check_snippets.cmake: ${md_path} does not exist")
  endif()
  string(MAKE_C_IDENTIFIER "${md}" md_id)
  file(READ "${md_path}" text)
  string(REPLACE "\\" "${_backslash}" text "${text}")
  string(REPLACE ";" "${_semi}" text "${text}")
  string(REPLACE "[" "${_open}" text "${text}")
  string(REPLACE "]" "${_close}" text "${text}")
  string(REPLACE "\r" "" text "${text}")
  string(REPLACE "\n" ";" lines "${text}")

  set(line_no 0)
  set(in_block FALSE)
  set(pending "")  # the `snippet` comments right above the current line, as "line:text" items
  foreach(line IN LISTS lines)
    math(EXPR line_no "${line_no} + 1")
    if(NOT in_block)
      if(line MATCHES "^ ? ? ?(```|~~~)[ ]*([^ ]*)")
        set(fence "${CMAKE_MATCH_1}")
        set(lang "${CMAKE_MATCH_2}")
        math(EXPR block_line "${line_no} + 1")
        set(in_block TRUE)
        set(block_is_cpp FALSE)
        set(block_body "")
        set(block_text "")
        set(block_includes "")
        set(block_toplevel FALSE)
        set(block_context "")
        set(context_line 0)
        set(block_quote "")
        if(lang STREQUAL "")
          string(APPEND errors "${md}:${line_no}: a code block without a language: mark C++ "
            "```cpp (it is then compiled), anything else ```text, ```sh...\n")
        elseif(lang MATCHES "^(cpp|c\\+\\+|cxx|cc|C\\+\\+|CPP)$")
          set(block_is_cpp TRUE)
          math(EXPR blocks_total "${blocks_total} + 1")
        endif()
        foreach(item IN LISTS pending)
          string(REGEX MATCH "^([0-9]+):(.*)$" _ "${item}")
          set(d_line "${CMAKE_MATCH_1}")
          _decode(d "${CMAKE_MATCH_2}")
          if(NOT block_is_cpp)
            string(APPEND errors "${md}:${d_line}: a `snippet` comment above a block that is "
              "not ```cpp\n")
          elseif(d STREQUAL "toplevel")
            set(block_toplevel TRUE)
          elseif(d MATCHES "^context: (.+)$")
            string(APPEND block_context "${CMAKE_MATCH_1}\n")
            if(context_line EQUAL 0)
              set(context_line "${d_line}")
            endif()
          elseif(d MATCHES "^quote: (.+)$")
            set(block_quote "${CMAKE_MATCH_1}")
          else()
            string(APPEND errors "${md}:${d_line}: unknown snippet comment '${d}': use "
              "`<!-- snippet toplevel -->`, `<!-- snippet context: CODE -->` or "
              "`<!-- snippet quote: PATH -->`\n")
          endif()
        endforeach()
        set(pending "")
      elseif(line MATCHES "^<!-- snippet (.*[^ ]) -->$")
        list(APPEND pending "${line_no}:${CMAKE_MATCH_1}")
      elseif(line MATCHES "<!--[ ]*snippet")
        string(APPEND errors "${md}:${line_no}: a malformed snippet comment: write it alone on "
          "its line, as `<!-- snippet toplevel -->`, `<!-- snippet context: CODE -->` or "
          "`<!-- snippet quote: PATH -->`\n")
        set(pending "")
      else()
        set(pending "")
      endif()
    elseif(line MATCHES "^ ? ? ?${fence}[ ]*$")
      set(in_block FALSE)
      if(block_is_cpp)
        _decode(block_body "${block_body}")
        _decode(block_text "${block_text}")
        if(NOT block_quote STREQUAL "")
          math(EXPR quotes_total "${quotes_total} + 1")
          set(quoted "${SOURCE_DIR}/${block_quote}")
          if(NOT EXISTS "${quoted}")
            string(APPEND errors "${md}:${block_line}: quotes ${block_quote}, which does not "
              "exist\n")
          else()
            file(READ "${quoted}" quoted_text)
            string(REPLACE "\r" "" quoted_text "${quoted_text}")
            string(FIND "\n${quoted_text}" "\n${block_text}" at)
            if(at EQUAL -1)
              string(APPEND errors "${md}:${block_line}: the block is not a verbatim quote of "
                "${block_quote} (whole lines, same indentation): copy the file's text again\n")
            endif()
          endif()
        endif()
        _decode(block_includes "${block_includes}")
        _decode(block_context "${block_context}")
        _add_block()
      endif()
    elseif(block_is_cpp)
      string(APPEND block_text "${line}\n")
      if(NOT block_toplevel AND line MATCHES "^[ ]*#[ ]*include")
        # Keeps the block's line numbers: the include goes up, a blank line stays.
        math(EXPR include_line "${line_no}")
        string(APPEND block_includes "#line ${include_line} \"${md}\"\n${line}\n")
        string(APPEND block_body "\n")
      else()
        string(APPEND block_body "${line}\n")
      endif()
    endif()
  endforeach()
  if(in_block)
    string(APPEND errors "${md}:${block_line}: the code block is never closed\n")
  endif()

endforeach()

# The statement blocks of all files, one file per group: each compilation parses the library's
# headers again, which is most of its time.
foreach(group core redis postgres)
  if(NOT _body_${group} STREQUAL "")
    set(_file "${OUT_DIR}/statements_${group}.cpp")
    file(WRITE "${_file}"
      "// Generated by tests/docs/check_snippets.cmake: do not edit.\n"
      "#include \"${PRELUDE}\"\n${_head_${group}}\n${_body_${group}}")
    list(APPEND units "${_file}")
    string(REPLACE ";" ", " _blocks "${_unit_blocks_${group}}")
    set(_unit_blocks_statements_${group} "${_blocks}")
    set(_unit_group_statements_${group} "${group}")
  endif()
endforeach()

if(NOT errors STREQUAL "")
  message(FATAL_ERROR "check_snippets.cmake:\n${errors}")
endif()
if(blocks_total EQUAL 0)
  message(FATAL_ERROR "check_snippets.cmake: no ```cpp block found in ${MARKDOWN}: is the "
    "parser broken?")
endif()

set(failures "")
foreach(unit IN LISTS units)
  get_filename_component(name "${unit}" NAME_WE)
  set(group "${_unit_group_${name}}")
  set(flags -std=c++17 -fsyntax-only "-I${INCLUDE}")
  if(group STREQUAL "redis" AND NOT REDIS_INCLUDES STREQUAL "")
    string(REPLACE "|" ";" dirs "${REDIS_INCLUDES}")
    foreach(dir IN LISTS dirs)
      list(APPEND flags "-I${dir}")
    endforeach()
  elseif(group STREQUAL "postgres" AND NOT POSTGRES_INCLUDES STREQUAL "")
    string(REPLACE "|" ";" dirs "${POSTGRES_INCLUDES}")
    foreach(dir IN LISTS dirs)
      list(APPEND flags "-I${dir}")
    endforeach()
  endif()
  # From the root, so that a diagnostic can quote the Markdown line it names.
  execute_process(
    COMMAND "${COMPILER}" ${flags} "${unit}"
    WORKING_DIRECTORY "${SOURCE_DIR}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)
  if(result EQUAL 0)
    message(STATUS "compiled: ${_unit_blocks_${name}}")
  else()
    string(APPEND failures "\n---- the block(s) at ${_unit_blocks_${name}} do not compile "
      "(generated file: ${unit}):\n${output}")
  endif()
endforeach()

list(LENGTH units units_total)
foreach(s IN LISTS skipped)
  message(STATUS "skipped: ${s}")
endforeach()
if(NOT failures STREQUAL "")
  message(FATAL_ERROR "check_snippets.cmake: code blocks that do not compile:${failures}")
endif()
list(LENGTH skipped skipped_total)
message(STATUS "${blocks_total} C++ blocks: ${units_total} files compiled, "
  "${skipped_total} blocks skipped, ${quotes_total} quotes checked")
