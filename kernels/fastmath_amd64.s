// AVX2+FMA versions of the exp-based elementwise loops (GELU, softmax):
// Cephes' expf polynomial, 8 floats at a time. Inputs of exp are clamped to
// [-80, 80], so no denormals or infinities appear inside; callers that need
// exact zeros (masked softmax entries) set them afterwards. Each function
// handles len &^ 7 elements; the Go wrappers do the tail with the scalar code.

#include "textflag.h"

// Constants, each replicated 8 times (32 bytes): 0 one, 32 2C, 64 2C·0.044715,
// 96 hi, 128 lo, 160 log2e, 192 c1, 224 c2, 256..416 p0..p5, 448 C,
// 480 3C·0.044715, 512 int32 127; C = sqrt(2/pi).
DATA expconst<>+0(SB)/4, $0x3f800000
DATA expconst<>+4(SB)/4, $0x3f800000
DATA expconst<>+8(SB)/4, $0x3f800000
DATA expconst<>+12(SB)/4, $0x3f800000
DATA expconst<>+16(SB)/4, $0x3f800000
DATA expconst<>+20(SB)/4, $0x3f800000
DATA expconst<>+24(SB)/4, $0x3f800000
DATA expconst<>+28(SB)/4, $0x3f800000
DATA expconst<>+32(SB)/4, $0x3fcc422a
DATA expconst<>+36(SB)/4, $0x3fcc422a
DATA expconst<>+40(SB)/4, $0x3fcc422a
DATA expconst<>+44(SB)/4, $0x3fcc422a
DATA expconst<>+48(SB)/4, $0x3fcc422a
DATA expconst<>+52(SB)/4, $0x3fcc422a
DATA expconst<>+56(SB)/4, $0x3fcc422a
DATA expconst<>+60(SB)/4, $0x3fcc422a
DATA expconst<>+64(SB)/4, $0x3d922279
DATA expconst<>+68(SB)/4, $0x3d922279
DATA expconst<>+72(SB)/4, $0x3d922279
DATA expconst<>+76(SB)/4, $0x3d922279
DATA expconst<>+80(SB)/4, $0x3d922279
DATA expconst<>+84(SB)/4, $0x3d922279
DATA expconst<>+88(SB)/4, $0x3d922279
DATA expconst<>+92(SB)/4, $0x3d922279
DATA expconst<>+96(SB)/4, $0x42a00000
DATA expconst<>+100(SB)/4, $0x42a00000
DATA expconst<>+104(SB)/4, $0x42a00000
DATA expconst<>+108(SB)/4, $0x42a00000
DATA expconst<>+112(SB)/4, $0x42a00000
DATA expconst<>+116(SB)/4, $0x42a00000
DATA expconst<>+120(SB)/4, $0x42a00000
DATA expconst<>+124(SB)/4, $0x42a00000
DATA expconst<>+128(SB)/4, $0xc2a00000
DATA expconst<>+132(SB)/4, $0xc2a00000
DATA expconst<>+136(SB)/4, $0xc2a00000
DATA expconst<>+140(SB)/4, $0xc2a00000
DATA expconst<>+144(SB)/4, $0xc2a00000
DATA expconst<>+148(SB)/4, $0xc2a00000
DATA expconst<>+152(SB)/4, $0xc2a00000
DATA expconst<>+156(SB)/4, $0xc2a00000
DATA expconst<>+160(SB)/4, $0x3fb8aa3b
DATA expconst<>+164(SB)/4, $0x3fb8aa3b
DATA expconst<>+168(SB)/4, $0x3fb8aa3b
DATA expconst<>+172(SB)/4, $0x3fb8aa3b
DATA expconst<>+176(SB)/4, $0x3fb8aa3b
DATA expconst<>+180(SB)/4, $0x3fb8aa3b
DATA expconst<>+184(SB)/4, $0x3fb8aa3b
DATA expconst<>+188(SB)/4, $0x3fb8aa3b
DATA expconst<>+192(SB)/4, $0x3f318000
DATA expconst<>+196(SB)/4, $0x3f318000
DATA expconst<>+200(SB)/4, $0x3f318000
DATA expconst<>+204(SB)/4, $0x3f318000
DATA expconst<>+208(SB)/4, $0x3f318000
DATA expconst<>+212(SB)/4, $0x3f318000
DATA expconst<>+216(SB)/4, $0x3f318000
DATA expconst<>+220(SB)/4, $0x3f318000
DATA expconst<>+224(SB)/4, $0xb95e8083
DATA expconst<>+228(SB)/4, $0xb95e8083
DATA expconst<>+232(SB)/4, $0xb95e8083
DATA expconst<>+236(SB)/4, $0xb95e8083
DATA expconst<>+240(SB)/4, $0xb95e8083
DATA expconst<>+244(SB)/4, $0xb95e8083
DATA expconst<>+248(SB)/4, $0xb95e8083
DATA expconst<>+252(SB)/4, $0xb95e8083
DATA expconst<>+256(SB)/4, $0x39506967
DATA expconst<>+260(SB)/4, $0x39506967
DATA expconst<>+264(SB)/4, $0x39506967
DATA expconst<>+268(SB)/4, $0x39506967
DATA expconst<>+272(SB)/4, $0x39506967
DATA expconst<>+276(SB)/4, $0x39506967
DATA expconst<>+280(SB)/4, $0x39506967
DATA expconst<>+284(SB)/4, $0x39506967
DATA expconst<>+288(SB)/4, $0x3ab743ce
DATA expconst<>+292(SB)/4, $0x3ab743ce
DATA expconst<>+296(SB)/4, $0x3ab743ce
DATA expconst<>+300(SB)/4, $0x3ab743ce
DATA expconst<>+304(SB)/4, $0x3ab743ce
DATA expconst<>+308(SB)/4, $0x3ab743ce
DATA expconst<>+312(SB)/4, $0x3ab743ce
DATA expconst<>+316(SB)/4, $0x3ab743ce
DATA expconst<>+320(SB)/4, $0x3c088908
DATA expconst<>+324(SB)/4, $0x3c088908
DATA expconst<>+328(SB)/4, $0x3c088908
DATA expconst<>+332(SB)/4, $0x3c088908
DATA expconst<>+336(SB)/4, $0x3c088908
DATA expconst<>+340(SB)/4, $0x3c088908
DATA expconst<>+344(SB)/4, $0x3c088908
DATA expconst<>+348(SB)/4, $0x3c088908
DATA expconst<>+352(SB)/4, $0x3d2aa9c1
DATA expconst<>+356(SB)/4, $0x3d2aa9c1
DATA expconst<>+360(SB)/4, $0x3d2aa9c1
DATA expconst<>+364(SB)/4, $0x3d2aa9c1
DATA expconst<>+368(SB)/4, $0x3d2aa9c1
DATA expconst<>+372(SB)/4, $0x3d2aa9c1
DATA expconst<>+376(SB)/4, $0x3d2aa9c1
DATA expconst<>+380(SB)/4, $0x3d2aa9c1
DATA expconst<>+384(SB)/4, $0x3e2aaaaa
DATA expconst<>+388(SB)/4, $0x3e2aaaaa
DATA expconst<>+392(SB)/4, $0x3e2aaaaa
DATA expconst<>+396(SB)/4, $0x3e2aaaaa
DATA expconst<>+400(SB)/4, $0x3e2aaaaa
DATA expconst<>+404(SB)/4, $0x3e2aaaaa
DATA expconst<>+408(SB)/4, $0x3e2aaaaa
DATA expconst<>+412(SB)/4, $0x3e2aaaaa
DATA expconst<>+416(SB)/4, $0x3f000000
DATA expconst<>+420(SB)/4, $0x3f000000
DATA expconst<>+424(SB)/4, $0x3f000000
DATA expconst<>+428(SB)/4, $0x3f000000
DATA expconst<>+432(SB)/4, $0x3f000000
DATA expconst<>+436(SB)/4, $0x3f000000
DATA expconst<>+440(SB)/4, $0x3f000000
DATA expconst<>+444(SB)/4, $0x3f000000
DATA expconst<>+448(SB)/4, $0x3f4c422a
DATA expconst<>+452(SB)/4, $0x3f4c422a
DATA expconst<>+456(SB)/4, $0x3f4c422a
DATA expconst<>+460(SB)/4, $0x3f4c422a
DATA expconst<>+464(SB)/4, $0x3f4c422a
DATA expconst<>+468(SB)/4, $0x3f4c422a
DATA expconst<>+472(SB)/4, $0x3f4c422a
DATA expconst<>+476(SB)/4, $0x3f4c422a
DATA expconst<>+480(SB)/4, $0x3ddb33b6
DATA expconst<>+484(SB)/4, $0x3ddb33b6
DATA expconst<>+488(SB)/4, $0x3ddb33b6
DATA expconst<>+492(SB)/4, $0x3ddb33b6
DATA expconst<>+496(SB)/4, $0x3ddb33b6
DATA expconst<>+500(SB)/4, $0x3ddb33b6
DATA expconst<>+504(SB)/4, $0x3ddb33b6
DATA expconst<>+508(SB)/4, $0x3ddb33b6
DATA expconst<>+512(SB)/4, $0x0000007f
DATA expconst<>+516(SB)/4, $0x0000007f
DATA expconst<>+520(SB)/4, $0x0000007f
DATA expconst<>+524(SB)/4, $0x0000007f
DATA expconst<>+528(SB)/4, $0x0000007f
DATA expconst<>+532(SB)/4, $0x0000007f
DATA expconst<>+536(SB)/4, $0x0000007f
DATA expconst<>+540(SB)/4, $0x0000007f
GLOBL expconst<>(SB), RODATA|NOPTR, $544

// EXPY3 sets Y5 = exp(Y3), clobbering Y3, Y4, Y6.
#define EXPY3 \
	VMINPS expconst<>+96(SB), Y3, Y3; \
	VMAXPS expconst<>+128(SB), Y3, Y3; \
	VMULPS expconst<>+160(SB), Y3, Y4; \
	VROUNDPS $0, Y4, Y4; \
	VFNMADD231PS expconst<>+192(SB), Y4, Y3; \
	VFNMADD231PS expconst<>+224(SB), Y4, Y3; \
	VMOVUPS expconst<>+256(SB), Y5; \
	VFMADD213PS expconst<>+288(SB), Y3, Y5; \
	VFMADD213PS expconst<>+320(SB), Y3, Y5; \
	VFMADD213PS expconst<>+352(SB), Y3, Y5; \
	VFMADD213PS expconst<>+384(SB), Y3, Y5; \
	VFMADD213PS expconst<>+416(SB), Y3, Y5; \
	VMULPS Y3, Y3, Y6; \
	VFMADD213PS Y3, Y6, Y5; \
	VADDPS expconst<>+0(SB), Y5, Y5; \
	VCVTPS2DQ Y4, Y4; \
	VPADDD expconst<>+512(SB), Y4, Y4; \
	VPSLLD $23, Y4, Y4; \
	VMULPS Y4, Y5, Y5

// SIGMOIDGELU sets Y5 = s = sigmoid(2u(x)) for x in Y0, Y1 = x².
#define SIGMOIDGELU \
	VMULPS Y0, Y0, Y1; \
	VMOVUPS expconst<>+64(SB), Y2; \
	VFMADD213PS expconst<>+32(SB), Y1, Y2; \
	VMULPS Y0, Y2, Y3; \
	VSUBPS Y3, Y8, Y3; \
	EXPY3; \
	VADDPS expconst<>+0(SB), Y5, Y5; \
	VMOVUPS expconst<>+0(SB), Y6; \
	VDIVPS Y5, Y6, Y5

// func geluAVX2(out, x []float32)
TEXT ·geluAVX2(SB), NOSPLIT, $0-48
	MOVQ out_base+0(FP), DI
	MOVQ x_base+24(FP), SI
	MOVQ x_len+32(FP), CX
	SHRQ $3, CX
	JZ   geludone
	VXORPS Y8, Y8, Y8

geluloop:
	VMOVUPS (SI), Y0
	SIGMOIDGELU
	VMULPS  Y0, Y5, Y5
	VMOVUPS Y5, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     geluloop

geludone:
	VZEROUPPER
	RET

// func geluGradAccAVX2(dx, dy, x []float32)
TEXT ·geluGradAccAVX2(SB), NOSPLIT, $0-72
	MOVQ dx_base+0(FP), DI
	MOVQ dy_base+24(FP), DX
	MOVQ x_base+48(FP), SI
	MOVQ x_len+56(FP), CX
	SHRQ $3, CX
	JZ   graddone
	VXORPS Y8, Y8, Y8

gradloop:
	VMOVUPS (SI), Y0
	SIGMOIDGELU
	// g' = s + 2x·s(1-s)·(C + 3C·0.044715·x²)
	VMOVUPS     expconst<>+480(SB), Y2
	VFMADD213PS expconst<>+448(SB), Y1, Y2
	VMOVUPS     expconst<>+0(SB), Y6
	VSUBPS      Y5, Y6, Y6
	VMULPS      Y5, Y6, Y6
	VMULPS      Y0, Y6, Y6
	VADDPS      Y6, Y6, Y6
	VFMADD213PS Y5, Y2, Y6
	VMOVUPS     (DX), Y1
	VMOVUPS     (DI), Y2
	VFMADD231PS Y1, Y6, Y2
	VMOVUPS     Y2, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DX
	ADDQ        $32, DI
	DECQ        CX
	JNZ         gradloop

graddone:
	VZEROUPPER
	RET

// func expShiftAVX2(x []float32, shift float32)
TEXT ·expShiftAVX2(SB), NOSPLIT, $0-28
	MOVQ         x_base+0(FP), SI
	MOVQ         x_len+8(FP), CX
	VBROADCASTSS shift+24(FP), Y7
	SHRQ         $3, CX
	JZ           expdone

exploop:
	VMOVUPS (SI), Y3
	VSUBPS  Y7, Y3, Y3
	EXPY3
	VMOVUPS Y5, (SI)
	ADDQ    $32, SI
	DECQ    CX
	JNZ     exploop

expdone:
	VZEROUPPER
	RET
