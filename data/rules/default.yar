/*
  Default rules bundled with yaraflow: a small set in the spirit of what a
  network or log pipeline watches for, written to be exact on streams
  (`yaraflow check data/rules` says so).
*/

rule http_basic_auth : network credentials
{
  meta:
    description = "HTTP request carrying Basic credentials"
  strings:
    $auth = "Authorization: Basic " nocase
  condition:
    $auth
}

rule shell_download_and_run : network execution
{
  meta:
    description = "A shell one-liner that downloads and runs a script"
  strings:
    $curl = /(curl|wget) [^\r\n|]{1,120}\|[ ]?(ba)?sh/
  condition:
    $curl
}

rule sql_injection_probe : web attack
{
  meta:
    description = "Classic SQL injection probes"
  strings:
    $union = /union(\s|%20|\+){1,3}select/ nocase
    $tautology = "' or '1'='1" nocase
  condition:
    any of them
}

rule private_key_material : credentials
{
  meta:
    description = "A PEM private key"
  strings:
    $begin = "-----BEGIN " ascii
    $key = /PRIVATE KEY-----/
  condition:
    $begin and $key and @key[1] > @begin[1] and @key[1] - @begin[1] < 40
}

rule eicar_test_file : test
{
  meta:
    description = "The EICAR antivirus test string"
  strings:
    $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
  condition:
    $eicar at 0
}

rule powershell_encoded : execution
{
  meta:
    description = "PowerShell started with an encoded command"
  strings:
    $ps = "powershell" nocase fullword
    $enc = / -e(nc(odedcommand)?)? /i
  condition:
    $ps and $enc
}
